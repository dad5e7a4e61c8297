"""``cluster.kind=debug``: submitit's DebugExecutor runs the job in the caller's process (pdb-friendly, one task)."""

from __future__ import annotations

from pathlib import Path

import submitit

from cluster.executors import Executor
from ito_core.config import ClusterConfig


def build(cfg: ClusterConfig, folder: Path, name: str) -> submitit.Executor:
    executor = submitit.DebugExecutor(folder=folder)
    executor.update_parameters(timeout_min=cfg.timeout_min)
    return executor


def check(cfg: ClusterConfig) -> None:
    if cfg.tasks_per_node != 1:
        raise ValueError("config cluster.tasks_per_node: the debug executor runs one in-process task; "
                         "use cluster.kind=local for several processes")


# In-process: the job cannot outlive its caller, so there is nothing to re-attach.
EXECUTOR = Executor(name="debug", build=build, job_type=submitit.DebugJob, check=check)
