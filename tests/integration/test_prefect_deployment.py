"""The cluster workflow against a real Prefect server, driven as a user drives it.

``ito-sweep serve`` runs in the background (deployments ``ito-sweep/local`` and ``ito-sweep/slurm``);
sweeps start with ``prefect deployment run 'ito-sweep/local' --param overrides='[...]' --watch``.
Checked: the report in storage (markdown, CSV, PNG plots) and as a Prefect artifact; a new value on a
grid axis runs only the new points; the training limit holds; a grid point whose training process
is killed (as the OOM killer would) fails alone, and ``prefect flow-run retry`` skips everything that
completed and resumes that training from its last committed checkpoint; a sweep on the S3 endpoint.
Every test uses its own sweep name and storage folder on the one session server.
"""

from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from e2e.test_sweep_flow import SMALL_BUDGET
from fixtures.prefect_server import Background, PrefectServer, serving, venv_script
from fixtures.s3_server import S3Bucket, S3Server

from flows.grid import expand_grid, override_key
from flows.sweep import artifact_key
from ito_core.artifacts import run_key
from ito_core.config import load_config

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]


def sweep_overrides(tmp_path: Path, *grid: str) -> list[str]:
    """The e2e test's small budget with ``grid`` replacing the keys it sets, jobs under ``tmp_path``."""
    keys = {override_key(o) for o in grid}
    return [*(o for o in SMALL_BUDGET if override_key(o) not in keys), f"cluster.work_dir={tmp_path / 'work'}", *grid]


def run_deployment(server: PrefectServer, name: str, params: dict, served: Background) -> tuple[int, str, str]:
    code, output, run_id = server.run_deployment(name, params)
    return code, f"{output}\n--- served process ---\n{served.log_tail()}", run_id


def manifest_mtimes(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("manifest.json")}


def report_rows(store: Path, sweep: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((store / "sweeps" / sweep / "report.csv").read_text())))


def train_windows(server: PrefectServer, flow_run_id: str) -> list[tuple[float, float]]:
    """(start, end) of every train task run of a flow run."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with server.client() as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted((r.start_time.timestamp(), r.end_time.timestamp()) for r in runs
                  if r.name.startswith("train ") and r.start_time and r.end_time)


def aws_env(server: S3Server) -> dict[str, str]:
    """The S3 server's credentials, and nothing from this machine's AWS set-up."""
    return {"AWS_ACCESS_KEY_ID": server.key, "AWS_SECRET_ACCESS_KEY": server.secret,
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, s3_server: S3Server,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    """``ito-sweep serve`` in the background with the S3 server's credentials."""
    with serving(prefect_server, tmp_path_factory.mktemp("served"), **aws_env(s3_server)) as process:
        yield process


def test_deployment_run_reports_and_a_new_axis_value_runs_only_new_points(
        prefect_server: PrefectServer, served: Background, tmp_path: Path) -> None:
    store, sweep = tmp_path / "store", f"grow-{tmp_path.name}"
    params = {"overrides": sweep_overrides(tmp_path, "ito.images=1", "ito.fusion=none"), "sweep_name": sweep,
              "storage_root": str(store), "max_concurrent_train": 1}
    code, output, _ = run_deployment(prefect_server, "ito-sweep/local", params, served)
    assert code == 0, output
    before = manifest_mtimes(store)

    params["overrides"] = sweep_overrides(tmp_path, "ito.images=1,2,3", "ito.fusion=none")
    code, output, run_id = run_deployment(prefect_server, "ito-sweep/local", params, served)
    assert code == 0, output

    after = manifest_mtimes(store)
    assert {p: after.get(p) for p in before} == before, "the committed point and the prep were not redone"
    new_runs = {p.relative_to(store).parts[:2] for p in set(after) - set(before)}
    assert len(new_runs) == 2 and all(part == "runs" for part, _ in new_runs), "only the two new points ran"
    rows = report_rows(store, sweep)
    assert sorted(r["ito.images"] for r in rows) == ["1", "2", "3"] and {r["status"] for r in rows} == {"ok"}
    assert (store / "sweeps" / sweep / "plot-ito.images.png").read_bytes().startswith(b"\x89PNG")
    windows = train_windows(prefect_server, run_id)
    assert len(windows) == 3
    assert all(end <= start for (_, end), (start, _) in zip(windows, windows[1:], strict=False)), "one at a time"

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with prefect_server.client() as client:
        key = ArtifactFilterKey(any_=[artifact_key(sweep)])
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))
        run = client.read_flow_run(run_id)
        slurm = client.read_deployment_by_name("ito-sweep/slurm")
    latest = [str(a.data) for a in artifacts if str(a.flow_run_id) == run_id]
    assert latest and "3/3 grid points ok" in latest[0] and "| ito.images |" in latest[0]
    assert run.parameters["cluster"] == "local" and slurm.parameters == {"cluster": "slurm"}


class KillWhen(threading.Thread):
    """Once ``ready()`` holds, SIGKILL the training processes of the submitit local job in ``jobs_dir``."""

    def __init__(self, ready: Callable[[], bool], jobs_dir: Path, deadline_s: float = 300) -> None:
        super().__init__(daemon=True)
        self.ready, self.jobs_dir, self.deadline = ready, jobs_dir, time.monotonic() + deadline_s
        self.killed: list[int] = []

    def run(self) -> None:
        while not self.ready() and time.monotonic() < self.deadline:
            time.sleep(0.05)
        for submitted in self.jobs_dir.glob("*_submitted.pkl"):  # a local job's id is its controller's pid
            controller = psutil.Process(int(submitted.name.split("_")[0]))
            for task in controller.children():
                task.kill()
                self.killed.append(task.pid)


def test_killed_training_fails_alone_and_a_retry_resumes_it(
        prefect_server: PrefectServer, served: Background, tmp_path: Path) -> None:
    store, sweep = tmp_path / "store", f"retry-{tmp_path.name}"
    overrides = sweep_overrides(tmp_path, "ito.images=2", "ito.fusion=none", "train.steps=4,16")
    _, long = (run_key(load_config(point)) for point in expand_grid(overrides))  # 4 steps, 16 steps
    killer = KillWhen(lambda: any((store / long / "checkpoints").glob("step_*/manifest.json")),
                      tmp_path / "work" / long / "jobs")
    killer.start()
    params = {"overrides": overrides, "sweep_name": sweep, "storage_root": str(store), "max_concurrent_train": 2}
    code, output, run_id = run_deployment(prefect_server, "ito-sweep/local", params, served)
    killer.join(5)

    assert killer.killed, "the long point's training was killed after its first checkpoint"
    assert code == 1, f"the flow run ends Failed\n{output}"
    statuses = {r["train.steps"]: r["status"] for r in report_rows(store, sweep)}
    assert statuses == {"4": "ok", "16": "failed (train)"}, "one failed point did not cancel the other"
    report = (store / "sweeps" / sweep / "report.md").read_text()
    assert "train.steps=16: train failed" in report and "JobFailedError" in report
    assert f"prefect flow-run retry {run_id}" in report
    (first, first_end), (second, _) = train_windows(prefect_server, run_id)
    assert second < first_end, "both trainings ran at once (max_concurrent_train=2)"

    before = manifest_mtimes(store)
    subprocess.run([venv_script("prefect"), "flow-run", "retry", run_id], env=prefect_server.env(), check=True,
                   capture_output=True)
    assert prefect_server.wait_final(run_id).is_completed(), served.log_tail()

    after = manifest_mtimes(store)
    kept = {p: t for p, t in before.items() if p in after}
    assert {p: after[p] for p in kept} == kept, "no committed stage or checkpoint was redone"
    removed = set(before) - set(after)
    assert all(p.is_relative_to(store / long / "checkpoints") for p in removed), "only old checkpoints were pruned"
    assert all((store / long / stage / "manifest.json").exists() for stage in ("train", "model", "eval"))
    logs = "".join(p.read_text() for p in (tmp_path / "work" / long / "jobs").glob("*_0_log.err"))
    assert re.search(rf"resumed from \S*{long}/checkpoints/step_0*[1-9]", logs), "not restarted from step 0"
    assert {r["status"] for r in report_rows(store, sweep)} == {"ok"}


@pytest.mark.s3
def test_sweep_on_the_s3_endpoint(prefect_server: PrefectServer, served: Background, s3_bucket: S3Bucket,
                                  tmp_path: Path) -> None:
    sweep = f"s3-{tmp_path.name}"
    overrides = sweep_overrides(tmp_path, "ito.images=2", "ito.fusion=transformer",
                                f"storage.endpoint_url={s3_bucket.server.endpoint_url}")
    params = {"overrides": overrides, "sweep_name": sweep, "storage_root": s3_bucket.url("store")}
    code, output, _ = run_deployment(prefect_server, "ito-sweep/local", params, served)
    assert code == 0, output

    client, bucket = s3_bucket.server.client, s3_bucket.name
    keys = {o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])}
    assert {f"store/sweeps/{sweep}/{name}" for name in ("report.md", "report.csv", "results.json")} <= keys
    for stage in ("train", "model", "eval"):
        assert any(k.endswith(f"/{stage}/manifest.json") for k in keys), stage
    csv_text = client.get_object(Bucket=bucket, Key=f"store/sweeps/{sweep}/report.csv")["Body"].read().decode()
    assert [row["status"] for row in csv.DictReader(io.StringIO(csv_text))] == ["ok"]
