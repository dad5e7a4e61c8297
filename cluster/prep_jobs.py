"""Prep on SLURM: a job array of ``cluster.prep_tasks`` one-CPU-task jobs, then a one-task final job; whatever
else prep writes (eval sets, the embedded demo data) in one more one-task job.

``data=raw``: task ``t`` writes the shards ``i % T == t`` (``ito_core.prep_array``), the final job removes
duplicates across tasks and commits the manifest; ``data=webdataset``: the tasks count the user's shards, the
final job commits the index. The flow's process only submits, waits and logs. Both jobs are
checkpointable: a preempted task is requeued and redoes only its unfinished shards.
"""

from __future__ import annotations

import dataclasses
import logging
import resource
from typing import Any

import submitit

from cluster.executors import build_executor
from cluster.jobs import configure_logging, work_dir
from cluster.waiting import wait_streaming
from ito_core.config import ClusterConfig, RunConfig, as_dict, to_run_config
from ito_core.storage import build_store, export_shard_endpoint

PREP_JOBS = "prep-jobs"  # the job folder, under the data key in cluster.work_dir


def prep_cluster(cluster: ClusterConfig) -> ClusterConfig:
    """The cluster settings cut down to one task on one node, no GPU: prep decodes and resizes on CPUs."""
    return dataclasses.replace(cluster, nodes=1, tasks_per_node=1, gpus_per_node=0)


def cpu_seconds() -> float:
    """CPU time of this job process and its finished children (the prep pool's workers), imports included."""
    used = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in used)


class PrepTaskJob(submitit.helpers.Checkpointable):
    def __call__(self, cfg: dict[str, Any], *, key: str, task: int, num_tasks: int) -> dict[str, Any]:
        from ito_core.prep_array import index_task, prep_task

        configure_logging()
        run_cfg = to_run_config(cfg)
        export_shard_endpoint(run_cfg.storage)
        write = index_task if run_cfg.data.name == "webdataset" else prep_task
        done = write(run_cfg.data, build_store(run_cfg.storage), key, task=task, num_tasks=num_tasks)
        return {**done, "cpu_s": cpu_seconds()}


class PrepFinishJob(submitit.helpers.Checkpointable):
    def __call__(self, cfg: dict[str, Any], *, key: str, num_tasks: int) -> dict[str, Any]:
        from ito_core.prep_array import finish_array, finish_index

        configure_logging()
        run_cfg = to_run_config(cfg)
        export_shard_endpoint(run_cfg.storage)
        finish = finish_index if run_cfg.data.name == "webdataset" else finish_array
        manifest = finish(run_cfg.data, build_store(run_cfg.storage), key, num_tasks=num_tasks)
        return {"num_samples": manifest["num_samples"], "cpu_s": cpu_seconds()}


class PrepJob(submitit.helpers.Checkpointable):
    """What the array does not prepare (eval sets, the embedded data): ``ito_core.prep.prepare`` as one task."""

    def __call__(self, cfg: dict[str, Any]) -> dict[str, Any]:
        from ito_core.prep import prepare

        configure_logging()
        run_cfg = to_run_config(cfg)
        export_shard_endpoint(run_cfg.storage)
        return {"keys": prepare(run_cfg.data, run_cfg.eval, build_store(run_cfg.storage)), "cpu_s": cpu_seconds()}


def run_prep_job(cfg: RunConfig, key: str, logger: logging.Logger | Any) -> dict[str, str]:
    """Prepare the eval sets (and embedded training data) in a one-task job; return the data keys."""
    executor = build_executor(prep_cluster(cfg.cluster), work_dir(cfg, key) / PREP_JOBS, name="ito-prep")
    job = executor.submit(PrepJob(), as_dict(cfg))
    logger.info("prep: job %s prepares what is not committed yet for %s (eval sets, embedded data)", job.job_id, key)
    done = wait_streaming(job, logger, progress_every_s=cfg.cluster.progress_every_s, stage="prep")
    logger.info("prep: job %s done in %.1f CPU s", job.job_id, done["cpu_s"])
    return done["keys"]


def run_prep_array(cfg: RunConfig, key: str, logger: logging.Logger | Any) -> dict[str, Any]:
    """Submit the array, wait for every task, then the final job (which commits the manifest); return what each
    job reported (shards written, CPU seconds)."""
    num_tasks = cfg.cluster.prep_tasks
    executor = build_executor(prep_cluster(cfg.cluster), work_dir(cfg, key) / PREP_JOBS, name="ito-prep")
    config = as_dict(cfg)
    with executor.batch():  # one sbatch --array
        tasks = [executor.submit(PrepTaskJob(), config, key=key, task=t, num_tasks=num_tasks)
                 for t in range(num_tasks)]
    logger.info("prep: submitted a %d-task array (%s) for %s", num_tasks, tasks[0].job_id.split("_")[0], key)
    done = [wait_streaming(job, logger, progress_every_s=cfg.cluster.progress_every_s, stage="prep") for job in tasks]
    final_job = executor.submit(PrepFinishJob(), config, key=key, num_tasks=num_tasks)
    logger.info("prep: %d shards written by the array; final job %s dedups and commits",
                sum(d["written"] for d in done), final_job.job_id)
    final = wait_streaming(final_job, logger, progress_every_s=cfg.cluster.progress_every_s, stage="prep")
    logger.info("prep: committed %d samples; the %d tasks and the final job used %.1f CPU s", final["num_samples"],
                num_tasks, sum(d["cpu_s"] for d in [*done, final]))
    return {"tasks": done, "final": final}
