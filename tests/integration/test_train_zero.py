"""Real DeepSpeed training on CPU (gloo) through submitit's LocalExecutor: ZeRO-2 with 2 ranks,
exact resume from a committed checkpoint, and stripping to a plain dual encoder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from fixtures.tiny_run import tiny_config
from safetensors.torch import load_file

from cluster.jobs import submit_training
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig
from ito_core.methods import build_model
from ito_core.model_folder import WEIGHTS, load_stripped
from ito_core.models.dual_encoder import DualEncoder, count_parameters
from ito_core.storage import MANIFEST, LocalStore
from ito_core.strip import consolidate, strip

pytestmark = pytest.mark.distributed


def _train_through_submitit(cfg: RunConfig, shards: list[str], key: str) -> dict:
    results = submit_training(cfg, shard_paths=shards, shard_samples=[32, 32, 32], run_key=key).results()
    assert len(results) == cfg.cluster.tasks_per_node
    return results[0]


def _weights(store: LocalStore, key: str, tag: str, stage: int) -> dict[str, torch.Tensor]:
    return consolidate(Path(store.url(f"{key}/checkpoints")), tag, zero_stage=stage)


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory: pytest.TempPathFactory, small_shards: list[str]) -> tuple[RunConfig, LocalStore]:
    tmp = tmp_path_factory.mktemp("zero2")
    cfg = tiny_config(tmp, "deepspeed=zero2", "cluster.tasks_per_node=2")
    summary = _train_through_submitit(cfg, small_shards, "runs/a")
    assert summary["step"] == 6
    return cfg, LocalStore(cfg.storage.root)


def test_two_rank_zero2_trains_and_commits(zero2_run: tuple[RunConfig, LocalStore]) -> None:
    cfg, store = zero2_run
    assert committed_tags(store, "runs/a/checkpoints") == [tag_for(3), tag_for(6)]
    tag_dir = Path(store.url("runs/a/checkpoints")) / tag_for(6)
    assert len(list(tag_dir.glob("*optim_states.pt"))) == 2, "one ZeRO optimizer shard per rank"
    history = store.read_json(f"runs/a/train/{MANIFEST}")["history"]
    assert [row["step"] for row in history] == [3, 6]
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    assert {"align_loss", "fusion_loss"} <= set(history[-1])


def test_resume_from_committed_checkpoint_is_bitwise_exact(
        zero2_run: tuple[RunConfig, LocalStore], small_shards: list[str], tmp_path: Path) -> None:
    """A job killed after step 3 was committed (step 6 partial) resumes to the uninterrupted weights."""
    cfg, store = zero2_run
    ckpts = Path(store.url("runs/a/checkpoints"))
    interrupted = tiny_config(tmp_path, "deepspeed=zero2", "cluster.tasks_per_node=2")
    resumed_store = LocalStore(interrupted.storage.root)
    shutil.copytree(ckpts, Path(resumed_store.url("runs/a/checkpoints")))
    (Path(resumed_store.url("runs/a/checkpoints")) / tag_for(6) / MANIFEST).unlink()  # step 6 never committed

    summary = _train_through_submitit(interrupted, small_shards, "runs/a")

    assert summary["step"] == 6
    original, resumed = _weights(store, "runs/a", tag_for(6), 2), _weights(resumed_store, "runs/a", tag_for(6), 2)
    assert original.keys() == resumed.keys()
    for name in original:
        assert torch.equal(original[name], resumed[name]), name


def test_strip_drops_fusion_and_keeps_encoder_outputs(zero2_run: tuple[RunConfig, LocalStore],
                                                      tmp_path: Path) -> None:
    cfg, store = zero2_run
    manifest = strip(cfg, store=store, run_key="runs/a", staging=tmp_path)
    weights = load_file(str(Path(store.url("runs/a/model")) / WEIGHTS))
    assert not any(k.startswith("fusion") for k in weights)
    stripped = load_stripped(Path(store.url("runs/a/model")))
    assert manifest["num_parameters"] == count_parameters(DualEncoder(cfg.model)) == count_parameters(stripped)
    assert manifest["dropped_parameters"] > 0

    trained = build_model(cfg)
    trained.load_state_dict(_weights(store, "runs/a", tag_for(6), 2))
    trained.eval()
    torch.manual_seed(0)
    images, tokens = torch.randn(4, 3, 32, 32), torch.randint(1, 49000, (4, 32))
    tokens[:, 12] = 49407
    with torch.no_grad():
        assert torch.equal(stripped.encode_image(images), trained.encoder.encode_image(images))
        assert torch.equal(stripped.encode_text(tokens), trained.encoder.encode_text(tokens))
