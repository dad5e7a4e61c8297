"""The check helpers every validator shares (``validation`` and each method's spec): a bad value raises
``ValueError`` naming the key, the problem and the fix."""

from __future__ import annotations

from collections.abc import Collection

from ito_core.config.schema import RunConfig, TrainConfig


def require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"config {key}: {problem}; {fix}")


def choice(value: str, key: str, allowed: Collection[str]) -> None:
    require(value in allowed, key, f"{value!r} is not supported", f"choose one of {list(allowed)}")


def accumulation_steps(train: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step on each rank: batch_size = micro_batch_size x world_size x this."""
    per_rank = train.batch_size // world_size
    micro = train.micro_batch_size or per_rank
    require(micro >= 1 and per_rank % micro == 0, "train.micro_batch_size",
            f"{train.micro_batch_size} does not divide the per-rank batch {per_rank} (train.batch_size="
            f"{train.batch_size} over {world_size} processes)",
            "pick a divisor of the per-rank batch, or 0 for no gradient accumulation")
    return per_rank // micro


def world_size(cfg: RunConfig) -> int:
    """Training processes of a run: cluster.nodes x cluster.tasks_per_node."""
    return cfg.cluster.nodes * cfg.cluster.tasks_per_node
