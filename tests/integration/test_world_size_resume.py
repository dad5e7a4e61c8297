"""Resume at another world size: a 2-rank ZeRO run killed after step 3 resumes with 1 rank.

The 2-rank run (micro batch 8, no accumulation) and the 1-rank resume (micro batch 8, 2
accumulation steps) share the global batch of 16, so the resumed run continues at step 3 of the
1-rank data order (ito_core/data/loader.py: each rank reads whole shards, so the order depends on
the world size). The checkpoint's manifest says it was written by 2 ranks, so the 1-rank job
converts it to a DeepSpeed universal checkpoint before loading it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import deepspeed
import pytest
import torch
from fixtures.tiny_run import one_rank_group, tiny_config

from cluster.jobs import submit_training
from ito_core import checkpoint
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig
from ito_core.distributed import DistEnv
from ito_core.storage import MANIFEST, LocalStore
from ito_core.strip import consolidate
from ito_core.train import build_engine

pytestmark = pytest.mark.distributed

RUN, CKPTS = "runs/ws", "runs/ws/checkpoints"


def _train(cfg: RunConfig, shards: list[str]) -> dict:
    results = submit_training(cfg, shard_paths=shards, shard_samples=[32, 32, 32], run_key=RUN).results()
    assert len(results) == cfg.cluster.tasks_per_node
    return results[0]


def _adam_second_moment(states: list[dict]) -> float:
    """Sum of Adam's second moments over all parameters: layout-free (ZeRO padding holds zeros)."""
    return sum(float(s["exp_avg_sq"].double().sum()) for state in states for s in state.values())


def _saved_adam_states(tag_dir: Path) -> list[dict]:
    """The per-rank AdamW states of a ZeRO checkpoint (stage 1/2 and stage 3 name them differently)."""
    states = []
    for path in sorted(tag_dir.glob("*optim_states.pt")):
        saved = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        states.append((saved.get("base_optimizer_state") or saved["optimizer_state_dict"])["state"])
    return states


@pytest.mark.parametrize("stage", [2, 3])
def test_two_rank_checkpoint_resumes_with_one_rank(stage: int, tmp_path: Path, small_shards: list[str]) -> None:
    options = (f"deepspeed=zero{stage}", "train.micro_batch_size=8")
    two = tiny_config(tmp_path / "two", *options, "cluster.tasks_per_node=2")
    assert _train(two, small_shards)["step"] == 6
    # A copy of the run as if killed after committing step 3: step 6 never happened.
    one = tiny_config(tmp_path / "one", *options, "cluster.tasks_per_node=1")
    store_two, store_one = LocalStore(two.storage.root), LocalStore(one.storage.root)
    shutil.copytree(Path(store_two.url(CKPTS)) / tag_for(3), Path(store_one.url(CKPTS)) / tag_for(3))
    assert store_one.read_json(f"{CKPTS}/{tag_for(3)}/{MANIFEST}")["world_size"] == 2

    summary = _train(one, small_shards)

    assert summary["step"] == 6 and committed_tags(store_one, CKPTS) == [tag_for(3), tag_for(6)]
    assert store_one.read_json(f"{CKPTS}/{tag_for(6)}/{MANIFEST}")["world_size"] == 1
    history = summary["history"]
    assert [row["step"] for row in history] == [3, 6]  # step 3 from the 2-rank run, step 6 from this one
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)

    # What the 1-rank job loaded is exactly the 2-rank step-3 state: weights, step, lr, Adam moments.
    with one_rank_group() as env:
        _check_loaded_state(two, env, store_two, history[0], tmp_path / "staging")


def _check_loaded_state(two: RunConfig, env: DistEnv, store_two: LocalStore, saved_row: dict,
                        staging: Path) -> None:
    """Load the 2-rank run's step 3 into a 1-rank engine here and compare it with the saved shards."""
    stage = two.deepspeed.zero_stage
    shutil.rmtree(Path(store_two.url(CKPTS)) / tag_for(6))  # resume point: step 3
    point = checkpoint.find_resume_point(store_two, CKPTS, world_size=1, zero_stage=stage)
    assert point is not None and point.universal and point.saved_world_size == 2
    engine = build_engine(two, env, load_universal=True)
    state = checkpoint.restore(engine, point, store=store_two, key=CKPTS, staging=staging)
    assert state["step"] == 3 and engine.global_steps == 3
    assert engine.get_lr()[0] == saved_row["lr"]
    saved = consolidate(Path(store_two.url(CKPTS)), tag_for(3), zero_stage=stage)
    params = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values()), enabled=stage == 3):
        loaded = {name: p.detach().clone() for name, p in params.items()}
    assert saved.keys() == loaded.keys()
    for name in saved:
        assert torch.equal(saved[name], loaded[name]), name
    saved_states = _saved_adam_states(Path(store_two.url(CKPTS)) / tag_for(3))
    assert len(saved_states) == 2
    saved_v = _adam_second_moment(saved_states)
    loaded_v = _adam_second_moment([engine.optimizer.optimizer.state])
    assert saved_v > 0 and loaded_v == pytest.approx(saved_v, rel=1e-9)
