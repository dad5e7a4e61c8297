"""submitit executors from ``ClusterConfig``: local processes, in-process debug, or SLURM.

The training stage always goes through one of these, also on a laptop, so the local path is
the cluster path with another executor. ``ClusterConfig`` is the one schema (its values are checked with
the rest of the config, ``ito_core.config.validate_cluster``): ``slurm_parameters``
maps it onto submitit's ``SlurmExecutor`` names (which are sbatch's, with ``_`` for ``-``), and
``render_sbatch`` shows the exact script a submission would write, without submitting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit

from ito_core.config import ClusterConfig, check_job_folder, validate_cluster


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
    validate_cluster(cfg)  # again: eval jobs run on a config derived from the validated one
    check_job_folder(folder, kind=cfg.kind)
    if not name or "\n" in name:
        raise ValueError(f"job name {name!r}: use a non-empty one-line name")
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
