"""method=oner under real DeepSpeed: ZeRO-2 on 2 CPU ranks through submitit's LocalExecutor, then strip to the
single tower (no OpenCLIP files) and load it back with the trained encoder's outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures.tiny_run import tiny_config

from cluster.jobs import submit_training
from ito_core.checkpoint import tag_for
from ito_core.export import OPEN_CLIP_WEIGHTS
from ito_core.methods import build_model
from ito_core.methods.oner.model import OneTower
from ito_core.model_folder import load_stripped
from ito_core.storage import MANIFEST, LocalStore
from ito_core.strip import consolidate, strip

pytestmark = pytest.mark.distributed

ONER = ("method=oner", "ito.images=1", "ito.fusion=none", "deepspeed=zero2", "cluster.tasks_per_node=2")


def test_oner_trains_under_zero2_on_two_ranks_and_strips_to_one_tower(small_shards: list[str],
                                                                      tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, *ONER)
    results = submit_training(cfg, shard_paths=small_shards, shard_samples=[32, 32, 32], run_key="runs/o").results()
    assert len(results) == 2 and results[0]["step"] == 6
    store = LocalStore(cfg.storage.root)
    history = store.read_json(f"runs/o/train/{MANIFEST}")["history"]
    assert {"itc_loss", "xmc_loss", "cic_loss", "cmc_loss"} <= set(history[-1])
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)

    manifest = strip(cfg, store=store, run_key="runs/o", staging=tmp_path)
    model_dir = Path(store.url("runs/o/model"))
    assert manifest["dropped_parameters"] == 0 and not (model_dir / OPEN_CLIP_WEIGHTS).exists()
    stripped = load_stripped(model_dir)
    assert isinstance(stripped, OneTower)

    trained = build_model(cfg)
    trained.load_state_dict(consolidate(Path(store.url("runs/o/checkpoints")), tag_for(6), zero_stage=2))
    trained.eval()
    torch.manual_seed(0)
    images, tokens = torch.randn(4, 3, 32, 32), torch.randint(1, 49000, (4, 32))
    tokens[:, 0], tokens[:, 12] = 49406, 49407
    with torch.no_grad():
        torch.testing.assert_close(stripped.encode_image(images), trained.encoder.encode_image(images))
        torch.testing.assert_close(stripped.encode_text(tokens), trained.encoder.encode_text(tokens))
