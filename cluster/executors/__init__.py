"""Executors by name: ``cluster.kind`` picks one, and what differs between executors lives in its module.

An executor is one module in this package that defines ``EXECUTOR = Executor(...)``: how to build its submitit
executor, the jobs it makes, how a job outlives a dead flow process (``reattach``), its liveness check for the
waiting loop, its plan preview, and its rules on the ``cluster.*`` settings. The modules are found on import
(no list to edit); an executor defined elsewhere (a test, a site plugin) joins with ``register``. Validation
(``check_cluster``), job submission, waiting, re-attach and the plan all read this one table.

``ClusterConfig`` (ito_core) is the settings' shared schema, as submitit's executors share one parameter set;
``ito_core`` checks the values every executor reads, and ``check_cluster`` adds the executor's own rules.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import submitit

from ito_core.config import ClusterConfig, RunConfig, check_job_folder, validate_cluster


class Liveness(Protocol):
    """A scheduler's word on a job, for jobs whose submitit ``done()`` cannot be trusted alone."""

    state: str | None
    failed_nodes: list[str]  # nodes of the job's attempts that failed (named in its failure)

    @property
    def ended(self) -> bool: ...

    def check(self, *, force: bool = False) -> str | None:
        """Refresh (when due, or ``force``) and log changes; the problem once the job is over without a result."""

    def close(self) -> None: ...


def _no_check(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Executor:
    name: str  # cluster.kind
    build: Callable[[ClusterConfig, Path, str], submitit.Executor]  # (settings, job folder, job name)
    job_type: type[submitit.Job]  # the jobs it makes: waiting and re-attach find their executor by it
    # a recorded job (folder, job id, number of tasks), re-attached if still queued or running, else None
    reattach: Callable[[Path, str, int], submitit.Job | None] = lambda folder, job_id, tasks: None
    # (job, logger, grace_s) -> the scheduler's liveness check; None: the job's own ``done()`` is trusted
    liveness: Callable[[submitit.Job, Any, float], Liveness] | None = None
    check: Callable[[ClusterConfig], None] = _no_check  # its rules on cluster.* (ValueError naming the key)
    check_folder: Callable[[Path], None] = _no_check  # a job folder it can use (ValueError naming cluster.work_dir)
    preview: Callable[[ClusterConfig, Path], str] | None = None  # plan: what a submission would send, as markdown
    remote: bool = False  # jobs run on other machines: prep and eval go to jobs too (the flow only waits)
    multi_node: bool = False  # cluster.nodes > 1


EXECUTORS: dict[str, Executor] = {}


def register(executor: Executor) -> Executor:
    """Add ``executor`` to the table (a second one with the same name replaces the first)."""
    EXECUTORS[executor.name] = executor
    return executor


def _discover() -> None:
    for info in pkgutil.iter_modules(__path__, f"{__name__}."):
        found = getattr(importlib.import_module(info.name), "EXECUTOR", None)
        if isinstance(found, Executor):
            register(found)


def executor_for(kind: str) -> Executor:
    if kind not in EXECUTORS:
        raise ValueError(f"config cluster.kind: {kind!r} is not supported; choose one of {sorted(EXECUTORS)}")
    return EXECUTORS[kind]


def executor_of(job: submitit.Job) -> Executor:
    """The executor that made ``job`` (the most specific job type wins)."""
    kinds = [e for e in EXECUTORS.values() if isinstance(job, e.job_type)]
    assert kinds, f"no executor makes {type(job).__name__}"
    return min(kinds, key=lambda e: type(job).__mro__.index(e.job_type))


def check_cluster(cfg: ClusterConfig) -> None:
    """``cluster.*`` in full: the values every executor reads, then the chosen executor's own rules."""
    validate_cluster(cfg)
    executor = executor_for(cfg.kind)
    if cfg.nodes != 1 and not executor.multi_node:
        multi = "|".join(sorted(e.name for e in EXECUTORS.values() if e.multi_node))
        raise ValueError(f"config cluster.nodes: {cfg.nodes} nodes with cluster.kind={cfg.kind}; use "
                         f"cluster.kind={multi} for multi-node jobs, or cluster.nodes=1")
    executor.check(cfg)
    executor.check_folder(Path(cfg.work_dir).resolve())


def _checked(cfg: ClusterConfig, folder: Path) -> Executor:
    check_cluster(cfg)
    executor = executor_for(cfg.kind)
    check_job_folder(folder)
    executor.check_folder(folder)
    return executor


def build_executor(cfg: ClusterConfig, folder: Path, *, name: str = "ito-train") -> submitit.Executor:
    """The submitit executor for ``cfg.kind``, writing its jobs to ``folder``."""
    executor = _checked(cfg, folder)  # again: eval and prep jobs run on a config derived from the validated one
    if not name or "\n" in name:
        raise ValueError(f"job name {name!r}: use a non-empty one-line name")
    folder.mkdir(parents=True, exist_ok=True)
    return executor.build(cfg, folder, name)


def build_preview(cfg: ClusterConfig, folder: Path) -> str | None:
    """The executor's plan preview of a job in ``folder`` (markdown; nothing is created or submitted), or None."""
    executor = _checked(cfg, folder)
    return executor.preview(cfg, folder) if executor.preview else None


def eval_executor(cfg: RunConfig) -> str:
    """Where the eval stage runs: ``eval.executor``, with ``auto`` meaning a job when jobs run on other machines
    (the flow's process is on a login node there) and the flow's own process otherwise."""
    if cfg.eval.executor != "auto":
        return cfg.eval.executor
    return "job" if executor_for(cfg.cluster.kind).remote else "inprocess"


_discover()
