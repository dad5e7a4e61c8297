"""submitit executors from ``ClusterConfig``: local processes, in-process debug, or SLURM.

The training stage always goes through one of these, also on a laptop, so the local path is
the cluster path with another executor. ``ClusterConfig`` is the one schema: ``slurm_parameters``
maps it onto submitit's ``SlurmExecutor`` names (which are sbatch's, with ``_`` for ``-``), and
``render_sbatch`` shows the exact script a submission would write, without submitting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import submitit

from ito_core.config import ClusterConfig

KINDS = ("local", "debug", "slurm")
# sbatch options the cluster config (or submitit itself) owns: extra_sbatch must not fight them.
MANAGED_SBATCH = {
    "job-name": "the job name", "nodes": "cluster.nodes", "ntasks-per-node": "cluster.tasks_per_node",
    "cpus-per-task": "cluster.cpus_per_task", "gpus-per-node": "cluster.gpus_per_node", "mem": "cluster.mem_gb",
    "time": "cluster.timeout_min", "partition": "cluster.partition", "account": "cluster.account",
    "qos": "cluster.qos", "constraint": "cluster.constraint", "signal": "the USR2 preemption signal",
    "output": "submitit's log paths", "error": "submitit's log paths", "open-mode": "submitit's log paths",
    "array": "submitit's job arrays",
}
SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"config {key}: {problem}; {fix}")


def validate_cluster(cfg: ClusterConfig, folder: Path) -> None:
    """Raise ``ValueError`` naming the ``cluster.*`` key and the fix, before anything is submitted."""
    _require(cfg.kind in KINDS, "cluster.kind", f"{cfg.kind!r} is not supported", f"choose one of {list(KINDS)}")
    for key, low in (("nodes", 1), ("tasks_per_node", 1), ("gpus_per_node", 0), ("cpus_per_task", 1),
                     ("mem_gb", 0), ("timeout_min", 1), ("max_requeues", 0)):
        value = getattr(cfg, key)
        _require(isinstance(value, int) and value >= low, f"cluster.{key}", f"{value!r}", f"use an integer >= {low}")
    if cfg.kind != "slurm":
        _require(cfg.nodes == 1, "cluster.nodes", f"{cfg.nodes} nodes with cluster.kind={cfg.kind}",
                 "use cluster.kind=slurm for multi-node jobs, or cluster.nodes=1")
    if cfg.kind == "debug":
        _require(cfg.tasks_per_node == 1, "cluster.tasks_per_node", "the debug executor runs one in-process task",
                 "use cluster.kind=local for several processes")
    if cfg.gpus_per_node:
        _require(cfg.tasks_per_node == cfg.gpus_per_node, "cluster.tasks_per_node",
                 f"{cfg.tasks_per_node} tasks for {cfg.gpus_per_node} GPUs per node (one training process per GPU)",
                 f"set cluster.tasks_per_node={cfg.gpus_per_node}")
    # sbatch reads one option per line: a newline in a path or value would end the #SBATCH line.
    _require("\n" not in str(folder), "cluster.work_dir", f"job folder {str(folder)!r} contains a newline",
             "pick a work_dir (and run key) without newlines")
    if cfg.kind == "slurm":  # SLURM reads '%' in log paths as a pattern and fails to open paths with a backslash
        bad = sorted({c for c in str(folder) if c in "%\\"})
        _require(not bad, "cluster.work_dir", f"job folder {str(folder)!r} contains {bad}",
                 "pick a work_dir (and run key) without '%' or backslashes")
    for key in ("partition", "account", "qos", "constraint"):
        _require("\n" not in getattr(cfg, key), f"cluster.{key}", "contains a newline", "remove it")
    for raw, value in cfg.extra_sbatch.items():
        key = str(raw).replace("_", "-")
        _require(bool(SBATCH_KEY.match(key)), f"cluster.extra_sbatch.{raw}", "is not an sbatch long option name",
                 "use names like 'mail-type' or 'exclusive' (no leading dashes)")
        _require(key not in MANAGED_SBATCH, f"cluster.extra_sbatch.{raw}",
                 f"--{key} is set from {MANAGED_SBATCH.get(key)}", "set that instead")
        _require(isinstance(value, str | int | float | bool) and "\n" not in str(value),
                 f"cluster.extra_sbatch.{raw}", f"{value!r}", "use a one-line string, number or true")


def signal_delay_s(timeout_min: int) -> int:
    """Seconds before the time limit at which SLURM sends USR2 (submitit then checkpoints and requeues).

    Training resumes from the newest committed checkpoint, so USR2 only has to leave time for the
    requeue: 90 s (submitit's default) on real time limits, a quarter of very short ones.
    """
    return max(5, min(90, timeout_min * 60 // 4))


def slurm_parameters(cfg: ClusterConfig, *, name: str) -> dict[str, Any]:
    """``ClusterConfig`` -> ``SlurmExecutor.update_parameters`` keywords (sbatch option names)."""
    params: dict[str, Any] = {
        "job_name": name, "nodes": cfg.nodes, "ntasks_per_node": cfg.tasks_per_node,
        "cpus_per_task": cfg.cpus_per_task, "time": cfg.timeout_min, "signal_delay_s": signal_delay_s(cfg.timeout_min),
        # one rank failing must end the step, else the other ranks wait in a collective until gloo/NCCL times out
        "srun_args": ["--kill-on-bad-exit=1"],
        "additional_parameters": {str(k).replace("_", "-"): v for k, v in cfg.extra_sbatch.items()},
    }
    optional = {"gpus_per_node": cfg.gpus_per_node, "mem": f"{cfg.mem_gb}GB" if cfg.mem_gb else "",
                "partition": cfg.partition, "account": cfg.account, "qos": cfg.qos, "constraint": cfg.constraint}
    params.update({k: v for k, v in optional.items() if v})
    return params


def build_executor(cfg: ClusterConfig, folder: Path, *, name: str = "ito-train") -> submitit.Executor:
    """An executor whose jobs run ``tasks_per_node`` processes per node, requeued up to ``max_requeues`` times
    after a time-out (submitit's ``max_num_timeout``; preemptions requeue without limit)."""
    validate_cluster(cfg, folder)
    _require(bool(name) and "\n" not in name, "job name", f"{name!r}", "use a non-empty one-line name")
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "debug":
        executor: submitit.Executor = submitit.DebugExecutor(folder=folder)
        executor.update_parameters(timeout_min=cfg.timeout_min)
        return executor
    if cfg.kind == "local":
        executor = submitit.LocalExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
        executor.update_parameters(timeout_min=cfg.timeout_min, tasks_per_node=cfg.tasks_per_node, nodes=1,
                                   gpus_per_node=cfg.gpus_per_node)
        return executor
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise ValueError(f"config cluster.kind: 'slurm' but no SLURM client here ({err}); "
                         "run on a SLURM login node, or use cluster.kind=local") from err
    executor.update_parameters(**slurm_parameters(cfg, name=name))
    return executor


def render_sbatch(executor: submitit.SlurmExecutor) -> str:
    """The sbatch script ``executor.submit`` would write (submitit's own renderer; nothing is submitted)."""
    return executor._make_submission_file_text(executor._submitit_command_str, uid="preview")
