"""``cluster.kind=local``: submitit's LocalExecutor runs each job's tasks as processes on this machine.

Its job id is the pid of submitit's controller process, which outlives the flow process that started it: a
rerun re-attaches to a controller still running its folder's job (a pid reused by another process is not taken).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import submitit

from cluster.executors import Executor
from ito_core.config import ClusterConfig


def build(cfg: ClusterConfig, folder: Path, name: str) -> submitit.Executor:
    """Jobs of ``tasks_per_node`` processes, requeued up to ``max_requeues`` times after a time-out."""
    executor = submitit.LocalExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
    executor.update_parameters(timeout_min=cfg.timeout_min, tasks_per_node=cfg.tasks_per_node, nodes=1,
                               gpus_per_node=cfg.gpus_per_node)
    return executor


def reattach(folder: Path, job_id: str, num_tasks: int) -> submitit.Job | None:
    if not controller_alive(int(job_id), Path(folder)):
        return None
    return submitit.LocalJob(folder, job_id, tasks=range(num_tasks), process=_Orphan(int(job_id)))


def controller_alive(pid: int, folder: Path) -> bool:
    """A local job's id is its controller's pid: alive, and controlling this folder's job (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _alive(pid) and b"submitit.local._local" in cmdline and str(folder.absolute()).encode() in cmdline


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a dead parent's ``wait``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class _Orphan:
    """What ``LocalJob`` needs of its controller's ``Popen`` when another (dead) process started it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        return None if _alive(self.pid) else 0  # the exit code was its dead parent's to read

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


EXECUTOR = Executor(name="local", build=build, job_type=submitit.LocalJob, reattach=reattach)
