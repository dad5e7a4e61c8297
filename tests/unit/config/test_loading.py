"""Config tree: every option composes and validates; bad values fail naming the key and the fix."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from ito_core import config as C

GROUP_SCHEMAS = {"model": C.ModelConfig, "data": C.DataConfig, "ito": C.ItoConfig, "loss": C.LossConfig,
                 "train": C.TrainConfig, "deepspeed": C.DeepSpeedConfig, "cluster": C.ClusterConfig,
                 "storage": C.StorageConfig, "eval": C.EvalConfig, "wandb": C.WandbConfig,
                 "report": C.ReportConfig, "plan": C.PlanConfig}
REQUIRED_OVERRIDES = {"data/webdataset.yaml": ["data.shards=[/data/a.tar]"],
                      "data/raw.yaml": ["data.input_kind=table", "data.input=/data/cc3m.parquet"],
                      "storage/s3.yaml": ["storage.root=s3://bucket/prefix"]}


def _options() -> list[tuple[str, str]]:
    return [(group, path.stem) for group in GROUP_SCHEMAS for path in sorted((C.CONFIG_DIR / group).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_option_composes_and_validates(group: str, option: str) -> None:
    extra = REQUIRED_OVERRIDES.get(f"{group}/{option}.yaml", [])
    cfg = C.load_config([f"{group}={option}", *extra])
    assert isinstance(getattr(cfg, group), GROUP_SCHEMAS[group])


@pytest.mark.parametrize(("group", "option"), _options())
def test_yaml_sets_every_schema_field(group: str, option: str) -> None:
    """All user-visible defaults live in configs/: no option silently falls back to a code default."""
    values = yaml.safe_load(Path(C.CONFIG_DIR, group, f"{option}.yaml").read_text())
    fields = {f.name for f in dataclasses.fields(GROUP_SCHEMAS[group])}
    assert set(values) == fields


def test_demo_experiment_has_the_readme_grid() -> None:
    cfg = C.load_config(["experiment=demo"])
    assert cfg.sweep == {"ito.images": "1,2", "ito.fusion": "none,transformer"}
    assert cfg.model.name == "tiny" and cfg.cluster.kind == "local" and cfg.storage.kind == "local"


@pytest.mark.parametrize(("override", "key", "hint"), [
    ("ito.images=0", "ito.images", "at least 1"),
    ("ito.texts=0", "ito.texts", "at least 1"),
    ("ito.fusion_weight=-1", "ito.fusion_weight", ">= 0"),
    ("deepspeed.zero_stage=5", "deepspeed.zero_stage", "[0, 1, 2, 3]"),
    ("ito.fusion=mlp", "ito.fusion", "'transformer'"),
    ("ito.readout=max", "ito.readout", "'mean'"),
    ("loss.name=triplet", "loss.name", "'siglip'"),
    ("train.batch_size=7", "train.batch_size", "multiple"),
    ("model.patch_size=5", "model.image_size", "multiple"),
    ("storage=s3", "storage.root", "s3://BUCKET"),
])
def test_impossible_values_name_key_and_fix(override: str, key: str, hint: str) -> None:
    with pytest.raises(ValueError) as err:
        C.load_config([override, "cluster.tasks_per_node=2"] if "batch_size" in override else [override])
    assert key in str(err.value) and hint in str(err.value)


def test_fusion_needs_two_fused_views() -> None:
    with pytest.raises(ValueError, match=r"ito\.fusion.*ito\.images>=2 or ito\.texts>=2"):
        C.load_config(["ito.images=1", "ito.texts=1", "ito.fusion=transformer"])
    assert C.load_config(["ito.images=1", "ito.texts=1", "ito.fusion=none"]).ito.fusion == "none"


@pytest.mark.parametrize("override", ["ito.imgs=2", "model=vit_z_99", "ito.images=two"])
def test_unknown_keys_and_wrong_types_fail_before_any_job(override: str) -> None:
    with pytest.raises(ValueError, match=override.split("=")[0].split(".")[-1]):
        C.load_config([override])


@pytest.mark.parametrize("override", ["+ito.imgs=2", "+foo=1", "+train.warmup=5"])
def test_keys_added_with_plus_are_refused_unless_the_section_is_a_dict(override: str) -> None:
    """Hydra's advice for an unknown key is '+key=...'; the schema has no such field, so it is refused too
    (merging alone would keep it quietly) by load_config and by the grid loader alike."""
    key = override[1:].split("=")[0]
    with pytest.raises(ValueError, match=rf"config {re.escape(key)}: no such key"):
        C.load_config([override])
    with pytest.raises(ValueError, match=re.escape(key)):
        C.load_grid([[override], ["seed=1"]])
    assert C.load_config(["+eval.datasets.mine=folder:/data/mine"]).eval.datasets == {"mine": "folder:/data/mine"}


def test_config_hash_is_stable_and_order_free() -> None:
    assert C.config_hash({"a": 1, "b": [1, 2]}) == C.config_hash({"b": [1, 2], "a": 1})
    assert C.config_hash({"a": 1}) != C.config_hash({"a": 2})


@pytest.mark.parametrize("experiment", ["demo", "ito_ablation", "ito_cc3m", "ito_cc12m"])
def test_experiment_configs_compose_and_validate(experiment: str) -> None:
    extra = ["data.input='/data/x/{0..9}.tar'", "storage=s3", "storage.root=s3://bucket/ito"] if "cc" in experiment \
        else []
    cfg = C.load_config([f"experiment={experiment}", *extra])
    if "cc" in experiment:
        assert cfg.model.name == "ViT-B-16" and cfg.train.batch_size == 2048 and cfg.deepspeed.precision == "bf16"
        assert cfg.cluster.kind == "slurm" and cfg.cluster.gpus_per_node == 8
        assert cfg.data.name == "raw" and cfg.data.input_kind == "img2dataset"
        assert cfg.eval.executor == "job"  # eval on a compute node's GPU


def test_ablation_grid_points_all_validate() -> None:
    from flows.grid import expand_grid

    points = expand_grid(["experiment=ito_ablation"])
    arms = ("clip", "multi_align", "ito", "ito_lambda05", "ito_fusion_cls", "ito_cheap_views")
    assert {p[-1] for p in points} == {f"ablation={a}" for a in arms}
    assert len(points) == 6 * 5
    configs = [C.load_config(p) for p in points if "seed=0" in p]
    assert {(c.ito.images, c.ito.fusion, c.ito.fusion_weight, c.ito.fusion_image_tokens, c.ito.patch_dropout)
            for c in configs} == {(1, "none", 0.0, "all", 0.0), (2, "none", 0.0, "all", 0.0),
                                  (2, "transformer", 2.0, "all", 0.0), (2, "transformer", 0.5, "all", 0.0),
                                  (2, "transformer", 2.0, "cls", 0.0), (2, "transformer", 2.0, "cls", 0.5)}
    assert {(c.train.steps, c.train.lr, c.method.name) for c in configs} == {
        (100, C.load_config(["comparison=ito"]).train.lr, "ito")}, "equal steps, ITO's tuned learning rate"
    assert all(C.CONFIG_DIR.joinpath("ablation", f"{a}.yaml").exists() for a in ("clip", "ito_m4", "ito_lambda4"))


def test_method_comparison_trains_each_method_at_its_own_learning_rate() -> None:
    from flows.grid import expand_grid

    points = expand_grid(["experiment=method_comparison"])
    assert len(points) == 6 * 5
    configs = {p[-1].split("=")[1]: C.load_config(p) for p in points if "seed=0" in p}
    assert {name: c.method.name for name, c in configs.items()} == {m: m for m in
                                                                    ("clip", "siglip", "slip", "flair", "oner", "ito")}
    assert all(c.train.lr == C.load_config([f"comparison={m}"]).train.lr for m, c in configs.items())
    assert {c.report.baseline for c in configs.values()} == {"comparison=clip"}
