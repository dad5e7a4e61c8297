"""submitit executors from ``ClusterConfig``: local processes, in-process debug, or SLURM.

The training stage always goes through one of these, also on a laptop, so the local path is
the cluster path with another executor.
"""

from __future__ import annotations

from pathlib import Path

import submitit

from ito_core.config import ClusterConfig


def build_executor(cfg: ClusterConfig, folder: Path, *, name: str = "ito-train") -> submitit.Executor:
    folder.mkdir(parents=True, exist_ok=True)
    if cfg.kind == "debug":
        executor: submitit.Executor = submitit.DebugExecutor(folder=folder)
        executor.update_parameters(timeout_min=cfg.timeout_min)
        return executor
    if cfg.kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=cfg.timeout_min, tasks_per_node=cfg.tasks_per_node,
                                   nodes=1, gpus_per_node=cfg.gpus_per_node)
        return executor
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
    params = {"job_name": name, "nodes": cfg.nodes, "ntasks_per_node": cfg.tasks_per_node,
              "cpus_per_task": cfg.cpus_per_task, "time": cfg.timeout_min,
              "additional_parameters": dict(cfg.extra_sbatch)}
    optional = {"gpus_per_node": cfg.gpus_per_node, "mem": f"{cfg.mem_gb}GB" if cfg.mem_gb else "",
                "partition": cfg.partition, "account": cfg.account, "qos": cfg.qos,
                "constraint": cfg.constraint}
    params.update({k: v for k, v in optional.items() if v})
    executor.update_parameters(**params)
    return executor
