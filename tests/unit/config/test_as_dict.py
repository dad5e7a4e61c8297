"""``as_dict`` (the dict run keys and cache keys hash) equals OmegaConf's container of the config, value types
included, so a faster ``as_dict`` never renames existing runs; its ``method`` section is flat, as users write it
(the method's own options and those of other methods, ``MethodConfig.others``, side by side)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ito_core.config import as_dict, config_hash, load_config


@pytest.mark.parametrize("overrides", [
    [],
    ["experiment=demo", "train.lr=1e-3", "seed=7"],
    ["ablation=ito_m4", "model=vit_b_16", "deepspeed=zero3"],
    ["experiment=method_comparison", "comparison=flair"],
    ["cluster=slurm", "+cluster.extra_sbatch.hold=true", "+cluster.extra_sbatch.mail-type=END", "storage=s3",
     "storage.root=s3://bucket/prefix"],
])
def test_as_dict_equals_omegaconfs_container(overrides: list[str]) -> None:
    cfg = load_config(overrides)
    cfg.wandb.group = "a-sweep"  # the sweep flow sets it on validated configs
    reference = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    others = reference["method"].pop("others")
    reference["method"] |= others
    assert json.dumps(as_dict(cfg), sort_keys=True) == json.dumps(reference, sort_keys=True)
    assert config_hash(as_dict(cfg)) == config_hash(reference)
