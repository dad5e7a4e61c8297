"""One Prefect task per pipeline stage; each only calls into ``cluster``/``ito_core``.

Every stage first checks its committed artifact (a manifest in the store, keyed by a hash of its
inputs: ``runs/<hash of the run's config>/...``, ``data/<hash of the data config>``) and skips itself
when it exists. That is the sweep's cache: keyed by inputs, never by the flow run, living in the
store (local or S3) rather than in the Prefect database, and a missing or deleted artifact is
rebuilt (Prefect's result cache would not notice that). So tasks use ``NO_CACHE``; re-running or
retrying a sweep redoes only what is missing, and training resumes from its newest checkpoint (or,
when a killed flow run left its training or eval job running, waits for that job rather than start another).
A committed eval also needs the same eval settings: pointing a finished run at other eval sets
evaluates it again. Eval runs in the flow's process, or as a one-task job with ``eval.executor=job``.

``train`` carries the tag ``ito-train``: ``prefect concurrency-limit create ito-train 8`` caps the
training jobs of all sweeps on a Prefect server (``max_concurrent_train`` caps one sweep's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError

from cluster.jobs import running_eval, running_training, submit_eval, submit_training, work_dir
from cluster.waiting import wait_streaming
from ito_core.config import RunConfig, as_dict, config_hash
from ito_core.eval.stage import committed_eval, run_eval
from ito_core.prep import prepare, shard_list, train_data_key
from ito_core.storage import MANIFEST, build_store, export_shard_endpoint, is_committed
from ito_core.strip import strip

if TYPE_CHECKING:
    import submitit

RUN_IDENTITY = ("model", "ito", "loss", "train", "deepspeed", "seed")
DATA_IDENTITY = ("data", "eval", "storage")  # what prep's artifacts depend on
TRAIN_TAG = "ito-train"


def run_key(cfg: RunConfig) -> str:
    """Runs are named by the hash of everything that changes their weights. The data enters as its prep
    key, so a new data option that leaves the shards alone (loader workers, eval sets) keeps run keys."""
    identity = {k: v for k, v in as_dict(cfg).items() if k in RUN_IDENTITY}
    identity["data"] = train_data_key(cfg.data)
    return f"runs/{config_hash(identity)}"


def data_id(cfg: RunConfig) -> str:
    """Grid points with equal data, eval and storage configs share one prep."""
    return config_hash({k: v for k, v in as_dict(cfg).items() if k in DATA_IDENTITY})


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
        return wait_streaming(running, logger)
    job = submit()
    logger.info("%s: submitted job %s (%s executor) for %s", stage, job.job_id, cfg.cluster.kind, key)
    return wait_streaming(job, logger)


@task(name="prep", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE, task_run_name="prep {cfg.data.name}")
def prep_task(cfg: RunConfig) -> dict[str, str]:
    export_shard_endpoint(cfg.storage)  # user data on s3:// (shards, eval sets) is read with boto3's env config
    return prepare(cfg.data, cfg.eval, build_store(cfg.storage))


@task(name="train", cache_policy=NO_CACHE, tags=[TRAIN_TAG], task_run_name="train {key}")
def train_task(cfg: RunConfig, data_keys: dict[str, str], key: str) -> dict[str, Any]:
    logger, store = stage_logger(), build_store(cfg.storage)
    if is_committed(store, f"{key}/train"):
        logger.info("train: %s already committed, skipping", store.url(f"{key}/train"))
        return store.read_json(f"{key}/train/{MANIFEST}")

    def submit() -> submitit.Job:
        store.write_json(f"{key}/config.json", as_dict(cfg))
        shards, counts = shard_list(store, data_keys["train"])
        return submit_training(cfg, shard_paths=shards, shard_samples=counts, run_key=key)

    return job_result("train", cfg, key, running_training(cfg, key), submit)


@task(name="strip", retries=1, cache_policy=NO_CACHE, task_run_name="strip {key}")
def strip_task(cfg: RunConfig, key: str) -> dict[str, Any]:
    store = build_store(cfg.storage)
    if is_committed(store, f"{key}/model"):
        return store.read_json(f"{key}/model/{MANIFEST}")
    staging = work_dir(cfg, key) / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    return strip(cfg, store=store, run_key=key, staging=staging)


@task(name="eval", retries=1, cache_policy=NO_CACHE, task_run_name="eval {key}")
def eval_task(cfg: RunConfig, data_keys: dict[str, str], key: str) -> list[dict[str, Any]]:
    store = build_store(cfg.storage)
    if (records := committed_eval(store, key, cfg)) is not None:
        return records
    if cfg.eval.executor == "job":
        return job_result("eval", cfg, key, running_eval(cfg, key),
                          lambda: submit_eval(cfg, data_keys=data_keys, run_key=key))
    return run_eval(cfg, store=store, run_key=key, data_keys=data_keys, staging=work_dir(cfg, key) / "staging")
