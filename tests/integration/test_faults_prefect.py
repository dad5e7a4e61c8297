"""The sweep against a real Prefect server through faults, on the S3 endpoint, with credentials in the env.
One grid point goes through them in turn:

- its flow-run process killed (as a node failure or the OOM killer would) while the point trains: the
  run is reported crashed, the training job runs on, and a rerun waits for that job rather than start
  a second one on the same checkpoints;
- the Prefect server restarted (stopped, started again on the same port and database) while that
  rerun waits: the rerun rides it out and goes on to strip;
- the rerun's flow-run process killed while evaluating: a third run skips every committed stage and
  redoes only the eval;
- then credentials (the AWS key pair, a W&B API key) appear nowhere: not in the bucket (configs,
  manifests, reports, model cards), the job folders and logs, the W&B offline files, the served
  process's log, nor the Prefect database (logs, parameters, artifacts); submitit's pickles stay in
  the job folders.

And a grid with one impossible point is refused before any job is submitted, naming the key.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from fixtures.prefect_server import Background, PrefectServer, serving
from fixtures.s3_server import S3Bucket, S3Server
from integration.test_prefect_deployment import aws_env, sweep_overrides

from flows.grid import expand_grid
from ito_core.artifacts import run_key
from ito_core.config import load_config

pytestmark = [pytest.mark.prefect_server, pytest.mark.s3, pytest.mark.timeout(600)]

WANDB_KEY = "local-0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key; must never leak
FAST_EVAL = ("eval.linear_probe=", "eval.modality_gap=", "wandb=offline")


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, s3_server: S3Server,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """``ito-sweep serve`` with the S3 credentials and a W&B key in its environment, as on a cluster."""
    with serving(prefect_server, tmp_path_factory.mktemp("served_faults"), ("local",), WANDB_API_KEY=WANDB_KEY,
                 **aws_env(s3_server)) as process:
        yield process


class Deployment(threading.Thread):
    """``prefect deployment run ... --watch`` in the background: ``result`` is (exit code, output, run id)."""

    def __init__(self, server: PrefectServer, params: dict) -> None:
        super().__init__(daemon=True)
        self.server, self.params = server, params
        self.result: tuple[int, str, str] | None = None

    def run(self) -> None:
        self.result = self.server.run_deployment("ito-sweep/local", self.params)


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.2)


def job_log(work: Path, key: str) -> str:
    return "".join(p.read_text(errors="replace") for p in (work / key / "jobs").glob("*_0_log.err"))


def flow_run_process(served: Background) -> psutil.Process:
    """The process the served runner started for the (one) running flow run."""
    children = [p for p in psutil.Process(served.proc.pid).children() if p.status() != psutil.STATUS_ZOMBIE]
    assert len(children) == 1, children
    return children[0]


def bucket_keys(bucket: S3Bucket) -> list[str]:
    pages = bucket.server.client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def bucket_objects(bucket: S3Bucket, suffix: str = "") -> dict[str, bytes]:
    """Every object whose key ends with ``suffix`` (call it once the sweep is over: pruning deletes objects)."""
    get = bucket.server.client.get_object
    return {key: get(Bucket=bucket.name, Key=key)["Body"].read() for key in bucket_keys(bucket) if key.endswith(suffix)}


def test_killed_flow_runs_and_a_server_restart_lose_nothing_and_leak_no_secret(
        prefect_server: PrefectServer, served: Background, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    sweep, work, server = f"faults-{tmp_path.name}", tmp_path / "work", s3_bucket.server
    overrides = sweep_overrides(tmp_path, "ito.images=2", "ito.fusion=none", "train.steps=150", *FAST_EVAL,
                                f"storage.endpoint_url={server.endpoint_url}")
    key = run_key(load_config(expand_grid(overrides)[0]))
    params = {"overrides": overrides, "sweep_name": sweep, "storage_root": s3_bucket.url("store")}
    committed = lambda stage: f"store/{key}/{stage}/manifest.json" in bucket_keys(s3_bucket)  # noqa: E731

    # 1. The flow-run process dies while its point trains: the training job (submitit's local controller,
    #    like a SLURM job) runs on.
    first = Deployment(prefect_server, params)
    first.start()
    wait_until(lambda: "step 3/150" in job_log(work, key), "training")
    flow_run_process(served).kill()

    # 2. A rerun waits for that job instead of submitting a second one on the same checkpoints. The Prefect
    #    server restarts (same port, same database) while it waits; it goes on to commit strip.
    second = Deployment(prefect_server, params)
    second.start()
    wait_until(lambda: "is still running (whoever waited for it died): waiting for it" in served.log_tail(200_000),
               "the rerun waiting for the running job")
    restarted = time.time()
    prefect_server.stop()
    time.sleep(3)
    prefect_server.start()
    wait_until(lambda: committed("model"), "strip committed")
    model = s3_bucket.server.client.head_object(Bucket=s3_bucket.name, Key=f"store/{key}/model/manifest.json")
    assert model["LastModified"].timestamp() > restarted - 1, "the rerun committed strip after the restart"

    # 3. The rerun's flow-run process dies while it evaluates (right after strip, in the flow's process).
    flow_run_process(served).kill()
    crashed(prefect_server, first)  # reported once the job it left running ended: that job kept its stdout
    crashed(prefect_server, second)
    assert not committed("eval")
    before = bucket_objects(s3_bucket, "manifest.json")

    # 4. A third run skips everything committed and redoes only the eval.
    code, output, _ = prefect_server.run_deployment("ito-sweep/local", params)

    assert code == 0, f"{output}\n--- served ---\n{served.log_tail()}"
    after = bucket_objects(s3_bucket, "manifest.json")
    assert {k: after[k] for k in before} == before, "prep, train and strip were skipped, not redone"
    assert set(after) - set(before) == {f"store/{key}/eval/manifest.json"}
    assert len(list((work / key / "jobs").glob("*_submitted.pkl"))) == 1, "one training job in all"
    assert "resumed from" not in job_log(work, key), "that one job trained from start to end"
    assert_no_secret_anywhere(prefect_server, served, s3_bucket, work)


def assert_no_secret_anywhere(prefect_server: PrefectServer, served: Background, bucket: S3Bucket,
                              work: Path) -> None:
    """Neither AWS key nor the W&B key in the bucket, the job folders (logs, W&B offline files), the served
    process's log or the Prefect server's files (its database holds the logs, parameters and artifacts)."""
    server = bucket.server
    secrets = {"AWS secret key": server.secret, "AWS access key id": server.key, "W&B API key": WANDB_KEY}
    places = {f"s3://{bucket.name}/{k}": v for k, v in bucket_objects(bucket).items()}
    for root in (work, prefect_server.home, served.log_path.parent):
        places.update({str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()})
    assert any("/wandb/" in p for p in places), "W&B offline files were written (and scanned)"
    assert any(p.endswith(".db") for p in places), "the Prefect database was scanned"
    assert sum(server.endpoint_url.encode() in data for data in places.values()) > 10, "configs reach the places"
    leaks = [f"{what} in {place}" for place, data in places.items() for what, secret in secrets.items()
             if secret.encode() in data]
    assert not leaks, leaks
    pickles = [p for p in places if p.endswith(".pkl")]
    assert pickles and all("/jobs/" in p for p in pickles), "submitit's pickles stay in its job folders"


def crashed(server: PrefectServer, deployment: Deployment) -> None:
    deployment.join(300)
    assert deployment.result is not None and deployment.result[0] != 0
    state = server.wait_final(deployment.result[2], timeout_s=60)
    assert state.is_crashed() or state.is_failed(), state


def test_an_impossible_grid_point_is_refused_before_any_job(
        prefect_server: PrefectServer, served: Background, tmp_path: Path) -> None:
    overrides = sweep_overrides(tmp_path, "ito.images=1,2", "ito.fusion=transformer", "ito.texts=1")
    code, output, _ = prefect_server.run_deployment(
        "ito-sweep/local", {"overrides": overrides, "storage_root": str(tmp_path / "store")}, timeout_s=120)
    log = served.log_tail(20000)
    assert code == 1 and "config ito.fusion" in log and "set ito.images>=2 or ito.texts>=2" in log, output
    assert not (tmp_path / "store").exists() and not (tmp_path / "work").exists(), "nothing ran for the valid point"
