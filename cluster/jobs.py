"""Jobs that run on the executor: set up torch.distributed from the job environment, call ito_core.

``TrainJob`` is checkpointable: on preemption or time-out submitit calls ``checkpoint`` and
requeues the same call; training then resumes from the newest *committed* checkpoint in the
store, so the requeued job carries only the config, never a pickled engine.

``EvalJob`` runs the eval stage (``eval.executor=job``) as one task with at most one GPU, on the same
executor kind as training.

Both are noted in their job folder when submitted (``record_job``), so a rerun after a killed flow run finds
a job still running (``running_training``, ``running_eval``) and waits for it instead of submitting another.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Any

import submitit
from submitit.local.debug import DebugJobEnvironment

from cluster.executors import build_executor
from cluster.waiting import record_job, running_job
from ito_core.artifacts import eval_id
from ito_core.config import ClusterConfig, RunConfig, as_dict, to_run_config
from ito_core.storage import build_store, export_shard_endpoint

log = logging.getLogger(__name__)


# The variables torch's env:// rendezvous reads. sbatch and the local executor pass the submitting shell's
# environment to the job, so any of these may be inherited from it (a torchrun shell, an earlier job).
DIST_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def export_distributed_env() -> None:
    """RANK/WORLD_SIZE/MASTER_* from this submitit job (SLURM's variables or the local executor's).

    The job's own values win over inherited ones: each task otherwise keeps the submitting shell's RANK or
    MASTER_PORT, and ranks of one job end up in separate groups (or in none) training on the same checkpoints.
    """
    job = submitit.JobEnvironment()
    if job.cluster == "debug":  # runs in the caller's process: its environment is not the job's to rewrite
        return
    inherited = {name: os.environ.pop(name) for name in DIST_VARS if name in os.environ}
    if inherited and job.global_rank == 0:
        log.warning("ignoring %s inherited from the submitting environment: this job's process group comes "
                    "from its own %s values", ", ".join(f"{k}={v}" for k, v in inherited.items()), job.cluster)
    dist = submitit.helpers.TorchDistributedEnvironment()
    dist.master_port = master_port(job.job_id, attempt=int(os.environ.get("SLURM_RESTART_COUNT", "0")))
    dist.export(set_cuda_visible_devices=False)


def master_port(job_id: str, *, attempt: int) -> int:
    """Rank 0's rendezvous port, the same for every rank of one attempt of the job and new for each attempt.

    submitit seeds it by the job id alone, but a requeued job (preempted, timed out, node failure) keeps its id: its
    next attempt then binds the port that the last attempt's rank 0 may still hold on the same node while it
    exits, and fails with EADDRINUSE. SLURM counts the attempts in ``SLURM_RESTART_COUNT``."""
    return random.Random(f"{job_id}/{attempt}").randint(20000, 60000)  # submitit's range


# Thread pools that read their size from the environment when a DataLoader worker (or a library in it) starts one.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def torch_threads(cluster: ClusterConfig, num_workers: int) -> int:
    """``cluster.torch_threads``, or when 0 the job's CPUs less one per DataLoader worker (at least one).

    torch otherwise starts one thread per core of the machine in every process: four local runs on 2 cores, or
    jobs sharing a node without CPU binding, then fight over the cores (measured 5x slower, docs/BENCHMARKS.md)."""
    return cluster.torch_threads or max(1, cluster.cpus_per_task - num_workers)


def cap_threads(cluster: ClusterConfig, num_workers: int) -> None:
    """Size this job process's torch threads and, for its DataLoader workers, one thread each. A ``debug`` job runs
    in the caller's process, whose threads are not the job's to set."""
    import torch

    if DebugJobEnvironment().activated():  # submitit's in-process executor: the threads are the caller's
        return
    threads = torch_threads(cluster, num_workers)
    torch.set_num_threads(threads)
    os.environ.update(dict.fromkeys(THREAD_ENV_VARS, "1"))
    log.info("torch threads: %d (cluster.cpus_per_task=%d, %d DataLoader workers)", threads,
             cluster.cpus_per_task, num_workers)


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)


class TrainJob(submitit.helpers.Checkpointable):
    def __call__(self, cfg: dict[str, Any], *, shard_paths: list[str], shard_samples: list[int], run_key: str,
                 staging: str) -> dict[str, Any]:
        from ito_core.train import train

        configure_logging()
        export_distributed_env()
        run_cfg = to_run_config(cfg)
        cap_threads(run_cfg.cluster, run_cfg.data.num_workers)
        export_shard_endpoint(run_cfg.storage)
        node = f"node-{os.environ.get('SLURM_NODEID', '0')}"
        return train(run_cfg, shard_paths=shard_paths, shard_samples=shard_samples,
                     store=build_store(run_cfg.storage), run_key=run_key, staging=Path(staging) / node,
                     scratch=node_scratch(run_cfg.cluster, run_key) / node)


class EvalJob(submitit.helpers.Checkpointable):
    """The eval stage as a one-task job (``eval.executor=job``); a preempted eval is requeued and starts over."""

    def __call__(self, cfg: dict[str, Any], *, data_keys: dict[str, str], run_key: str,
                 staging: str) -> list[dict[str, Any]]:
        from ito_core.eval.stage import run_eval

        configure_logging()
        run_cfg = to_run_config(cfg)
        cap_threads(run_cfg.cluster, num_workers=0)
        return run_eval(run_cfg, store=build_store(run_cfg.storage), run_key=run_key, data_keys=data_keys,
                        staging=Path(staging))


def work_dir(cfg: RunConfig, run_key: str) -> Path:
    """The run's job folders and local staging (on a shared filesystem for SLURM)."""
    return Path(cfg.cluster.work_dir).resolve() / run_key


def node_scratch(cluster: ClusterConfig, run_key: str) -> Path:
    """The run's node-local scratch (checkpoint staging), resolved on the node: ``cluster.scratch_dir``, else the
    job's $TMPDIR, else /tmp. Checkpoints pass through it on their way to and from S3, so a slow shared
    filesystem never holds up the ranks (at ViT-B/16 with Adam a checkpoint is about 1.8 GB)."""
    return Path(cluster.scratch_dir or os.environ.get("TMPDIR") or "/tmp") / "ito-sweep" / run_key


def staging_dir(cfg: RunConfig, run_key: str) -> Path:
    """The run's files beside its jobs on the shared filesystem: W&B's offline run, strip's and eval's local copies
    of store files. Training checkpoints pass through ``node_scratch`` instead."""
    return work_dir(cfg, run_key) / "staging"


TRAIN_JOBS, EVAL_JOBS = "jobs", "eval-jobs"  # a run's job folders in its work_dir, one per stage


def submit_training(cfg: RunConfig, *, shard_paths: list[str], shard_samples: list[int], run_key: str) -> submitit.Job:
    """``shard_samples``: each shard's sample count (prep manifest): it fixes which rank reads which shard."""
    work = work_dir(cfg, run_key)
    job = build_executor(cfg.cluster, work / TRAIN_JOBS).submit(
        TrainJob(), as_dict(cfg), shard_paths=shard_paths, shard_samples=shard_samples, run_key=run_key,
        staging=str(staging_dir(cfg, run_key)))
    record_job(job, cfg.cluster.kind)
    return job


def running_training(cfg: RunConfig, run_key: str) -> submitit.Job | None:
    """The run's training job if it still runs: the process that submitted it died (a killed flow run), and
    a second job would train on the same checkpoints."""
    return running_job(work_dir(cfg, run_key) / TRAIN_JOBS)


def eval_cluster(cluster: ClusterConfig) -> ClusterConfig:
    """The training job's cluster settings cut down to one task on one node, with one GPU if training had any."""
    return dataclasses.replace(cluster, nodes=1, tasks_per_node=1, gpus_per_node=min(cluster.gpus_per_node, 1))


def submit_eval(cfg: RunConfig, *, data_keys: dict[str, str], run_key: str) -> submitit.Job:
    work = work_dir(cfg, run_key)
    job = build_executor(eval_cluster(cfg.cluster), work / EVAL_JOBS, name="ito-eval").submit(
        EvalJob(), as_dict(cfg), data_keys=data_keys, run_key=run_key, staging=str(staging_dir(cfg, run_key)))
    record_job(job, cfg.cluster.kind, inputs=eval_id(cfg))
    return job


def running_eval(cfg: RunConfig, run_key: str) -> submitit.Job | None:
    """The run's eval job if it still runs (its submitter died) with ``cfg``'s eval settings: its records are
    the ones ``cfg`` asks for. One evaluating other settings (the rerun changed them) is not waited for."""
    return running_job(work_dir(cfg, run_key) / EVAL_JOBS, inputs=eval_id(cfg))
