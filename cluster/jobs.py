"""Jobs that run on the executor: set up torch.distributed from the job environment, call ito_core.

``TrainJob`` is checkpointable: on preemption or time-out submitit calls ``checkpoint`` and
requeues the same call; training then resumes from the newest *committed* checkpoint in the
store, so the requeued job carries only the config, never a pickled engine.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

import submitit

from cluster.executors import build_executor
from ito_core.config import RunConfig, as_dict, to_run_config
from ito_core.storage import build_store, export_shard_endpoint


def export_distributed_env() -> None:
    """RANK/WORLD_SIZE/MASTER_* from the submitit job (SLURM variables or the local executor's)."""
    # Outside a submitit job (debug executor) this raises; ito_core then makes a one-process group.
    with contextlib.suppress(RuntimeError):
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)


class TrainJob(submitit.helpers.Checkpointable):
    def __call__(self, cfg: dict[str, Any], *, shard_paths: list[str], samples_per_epoch: int, run_key: str,
                 staging: str) -> dict[str, Any]:
        from ito_core.train import train

        configure_logging()
        export_distributed_env()
        run_cfg = to_run_config(cfg)
        export_shard_endpoint(run_cfg.storage)
        rank_staging = Path(staging) / f"node-{os.environ.get('SLURM_NODEID', '0')}"
        return train(run_cfg, shard_paths=shard_paths, samples_per_epoch=samples_per_epoch,
                     store=build_store(run_cfg.storage), run_key=run_key, staging=rank_staging)


def work_dir(cfg: RunConfig, run_key: str) -> Path:
    """The run's job folders and local staging (on a shared filesystem for SLURM)."""
    return Path(cfg.cluster.work_dir).resolve() / run_key


def submit_training(cfg: RunConfig, *, shard_paths: list[str], samples_per_epoch: int, run_key: str) -> submitit.Job:
    """``samples_per_epoch``: the shards' total (prep manifest), so a resume skips whole epochs unread."""
    work = work_dir(cfg, run_key)
    return build_executor(cfg.cluster, work / "jobs").submit(
        TrainJob(), as_dict(cfg), shard_paths=shard_paths, samples_per_epoch=samples_per_epoch, run_key=run_key,
        staging=str(work / "staging"))
