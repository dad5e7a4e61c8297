"""One Prefect task per pipeline stage; each only calls into ``cluster``/``ito_core``.

Every stage first checks its committed artifacts (a manifest in the store, keyed by a hash of its
inputs: see ``ito_core.artifacts``) and, when they exist, logs that it skips itself (``reuse``). That is
the sweep's cache: keyed by inputs, never by the flow run, living in the store (local or S3) rather than
in the Prefect database, and a missing or deleted artifact is rebuilt (Prefect's result cache would not
notice that). So tasks use ``NO_CACHE``; re-running or retrying a sweep redoes only what is missing, and
training resumes from its newest checkpoint (or, when a killed flow run left its training or eval job
running, waits for that job rather than start another).
A committed eval also needs the same eval settings: pointing a finished run at other eval sets
evaluates it again. Eval runs as a one-task job on ``cluster=slurm`` (``eval.executor=auto``, the default) or
with ``eval.executor=job``, else in the flow's process.

``train`` takes a slot of the limit ``prefect concurrency-limit create ito-train 8`` makes, which caps the
training jobs of all sweeps on a Prefect server (``max_concurrent_train`` caps one sweep's); it takes it itself,
not through a task tag, so that a Prefect server restart does not fail it (``flows.train_slot``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from prefect import get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from cluster.executors import eval_executor, executor_for
from cluster.jobs import running_eval, running_training, staging_dir, submit_eval, submit_training
from cluster.prep_jobs import run_prep_array, run_prep_job
from cluster.waiting import wait_streaming
from flows.train_slot import train_slot
from ito_core.artifacts import RunLayout, committed, member_key, prep_keys, read_manifest
from ito_core.config import RunConfig, as_dict
from ito_core.data.order import check_shards
from ito_core.eval.stage import committed_eval, run_eval
from ito_core.prep import prepare, shard_list
from ito_core.storage import ArtifactStore, build_store, export_shard_endpoint
from ito_core.strip import strip

if TYPE_CHECKING:
    import submitit

T = TypeVar("T")


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow; a plain logger when a stage runs alone (``ito-sweep train``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows")


def job_result(stage: str, cfg: RunConfig, key: str, running: submitit.Job | None,
               submit: Callable[[], submitit.Job]) -> Any:
    """Wait for the stage's job and return its result: ``running``, the job a killed flow run left running
    (re-attached, so no second job), else a new one from ``submit``."""
    logger = stage_logger()
    if running is not None:
        logger.info("%s: job %s for %s is still running (whoever waited for it died): waiting for it", stage,
                    running.job_id, key)
        job = running
    else:
        job = submit()
        logger.info("%s: submitted job %s (%s executor) for %s", stage, job.job_id, cfg.cluster.kind, key)
    try:
        return wait_streaming(job, logger, progress_every_s=cfg.cluster.progress_every_s, stage=stage)
    finally:
        keep_logs(build_store(cfg.storage), job, RunLayout(key).job_logs(stage), logger)


def keep_logs(store: ArtifactStore, job: submitit.Job, key: str, logger: logging.Logger | Any) -> None:
    """Copy the job's rank logs (every task's stdout and stderr) to ``key`` in the store, beside the run's artifacts:
    Prefect only got the job's warnings, errors and sampled progress. A failed copy is logged, not raised: the
    stage's own outcome stands, and the logs are still in the job's folder."""
    try:
        for index in range(job.num_tasks):
            paths = job.task(index).paths
            for path in (Path(paths.stdout), Path(paths.stderr)):
                if path.is_file():
                    store.write_text(member_key(key, path.name), path.read_text(errors="replace"))
    except Exception as err:  # any store error: the logs are a copy, the stage must not fail for them
        logger.warning("job %s: rank logs not copied to %s (%s); they are in %s", job.job_id, store.url(key), err,
                       job.paths.folder)


def run_name(stage: str) -> Callable[[], str]:
    """Task run names by grid values (``train ito.images=2 ito.fusion=none (runs/ab12...)``), by run key alone
    for a point without any (a one-point sweep, a stage command)."""
    def name() -> str:
        params = runtime.task_run.parameters
        return f"{stage} {params['label']} ({params['key']})" if params.get("label") else f"{stage} {params['key']}"
    return name


def reuse(stage: str, store: ArtifactStore, keys: list[str], read: Callable[[], T | None]) -> T | None:
    """The stage's result from the store, ``read()``, when all its ``keys`` are committed and ``read`` finds it
    usable (eval: made with these eval settings); the stage is then skipped, and says so. Else None: it runs."""
    if not all(committed(store, key) for key in keys) or (result := read()) is None:
        return None
    stage_logger().info("%s: %s already committed, skipping", stage, ", ".join(store.url(key) for key in keys))
    return result


@task(name="prep", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE, task_run_name="prep {cfg.data.name}")
def prep_task(cfg: RunConfig) -> dict[str, str]:
    store, keys = build_store(cfg.storage), prep_keys(cfg.data, cfg.eval)
    if (done := reuse("prep", store, list(keys.values()), lambda: keys)) is not None:
        return done
    export_shard_endpoint(cfg.storage)  # user data on s3:// (shards, eval sets) is read with boto3's env config
    if not executor_for(cfg.cluster.kind).remote:
        return prepare(cfg.data, cfg.eval, store)
    # On a cluster the flow's process (the login node) only submits and waits: the work runs on compute nodes.
    if cfg.data.name in ("raw", "webdataset") and not committed(store, keys["train"]):
        run_prep_array(cfg, keys["train"], stage_logger())  # the training shards (or index)
    return run_prep_job(cfg, keys["train"], stage_logger())  # the eval sets (and embedded training data)


@task(name="train", cache_policy=NO_CACHE, task_run_name=run_name("train"))
def train_task(cfg: RunConfig, data_keys: dict[str, str], key: str, label: str = "") -> dict[str, Any]:
    store, run = build_store(cfg.storage), RunLayout(key)
    if (done := reuse("train", store, [run.train], lambda: read_manifest(store, run.train))) is not None:
        return done

    def submit() -> submitit.Job:
        store.write_json(run.config, as_dict(cfg))
        shards, counts = shard_list(store, data_keys["train"])
        check_shards(counts, world_size=cfg.cluster.nodes * cfg.cluster.tasks_per_node, lanes=1)  # before the queue
        return submit_training(cfg, shard_paths=shards, shard_samples=counts, run_key=key)

    task_run_id = runtime.task_run.id  # None in a stage command (``ito-sweep train``): no sweep to cap
    retry_s = cfg.cluster.slot_retry_s
    with train_slot(UUID(task_run_id), stage_logger(), retry_s=retry_s) if task_run_id else nullcontext():
        return job_result("train", cfg, key, running_training(cfg, key), submit)


@task(name="strip", retries=1, cache_policy=NO_CACHE, task_run_name=run_name("strip"))
def strip_task(cfg: RunConfig, key: str, label: str = "") -> dict[str, Any]:
    store, run = build_store(cfg.storage), RunLayout(key)
    if (done := reuse("strip", store, [run.model], lambda: read_manifest(store, run.model))) is not None:
        return done
    staging = staging_dir(cfg, key)
    staging.mkdir(parents=True, exist_ok=True)
    return strip(cfg, store=store, run_key=key, staging=staging)


@task(name="eval", retries=1, cache_policy=NO_CACHE, task_run_name=run_name("eval"))
def eval_task(cfg: RunConfig, data_keys: dict[str, str], key: str, label: str = "") -> list[dict[str, Any]]:
    store = build_store(cfg.storage)
    if (done := reuse("eval", store, [RunLayout(key).eval], lambda: committed_eval(store, key, cfg))) is not None:
        return done
    if eval_executor(cfg) == "job":
        return job_result("eval", cfg, key, running_eval(cfg, key),
                          lambda: submit_eval(cfg, data_keys=data_keys, run_key=key))
    return run_eval(cfg, store=store, run_key=key, data_keys=data_keys, staging=staging_dir(cfg, key))
