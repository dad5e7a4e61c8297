"""A guarded Prefect server (basic auth, set up as docs/CLUSTER.md does), and a cache that outlives the server.

- ``ito-sweep serve`` and ``prefect deployment run`` work with ``PREFECT_API_AUTH_STRING``; a client without
  it is refused (401), and the string lands in no log, no file of the store or job folders, nor the Prefect
  database. Task runs are named by the point's grid values. A config error ends a deployment run Failed
  with the one-line error as the state's message, no engine traceback; a dry run files the plan and submits
  nothing.
- ``ito-sweep serve`` with a wrong or missing string ends in one line naming ``PREFECT_API_AUTH_STRING`` (the
  preflight), not a 401 traceback.
- After a completed sweep the server's database is deleted and a new server started: the same deployment
  run skips every stage (the cache lives in the store, not in Prefect).
"""

from __future__ import annotations

import http.client
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.prefect_server import PrefectServer, serving, venv_script
from integration.test_prefect_deployment import manifest_mtimes, report_rows, sweep_overrides

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(900)]

FAST_EVAL = ("eval.linear_probe=", "eval.modality_gap=")


@dataclass
class Sweep:
    params: dict
    store: Path
    work: Path
    run_id: str
    served_log: Path


def submitted_jobs(work: Path) -> list[Path]:
    return sorted(work.rglob("*_submitted.pkl"))


@pytest.fixture(scope="module")
def completed_sweep(guarded_prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Sweep]:
    """A two-point sweep run to completion through the guarded server by ``prefect deployment run``."""
    tmp_path = tmp_path_factory.mktemp("guarded_sweep")
    store = tmp_path / "store"
    params = {"overrides": sweep_overrides(tmp_path, "ito.images=1", "ito.fusion=none", "seed=0,1", *FAST_EVAL),
              "sweep_name": f"guarded-{tmp_path.name}", "storage_root": str(store), "max_concurrent_train": 2}
    with serving(guarded_prefect_server, tmp_path, ("local",)) as served:
        code, output, run_id = guarded_prefect_server.run_deployment("ito-sweep/local", params)
        assert code == 0, f"{output}\n--- served ---\n{served.log_tail()}"
    yield Sweep(params, store, tmp_path / "work", run_id, served.log_path)


def unauthenticated_status(server: PrefectServer) -> int:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request("POST", "/api/deployments/filter", body="{}", headers={"Content-Type": "application/json"})
        return conn.getresponse().status
    finally:
        conn.close()


def test_a_guarded_server_serves_its_users_refuses_others_and_keeps_the_string_out_of_every_file(
        guarded_prefect_server: PrefectServer, completed_sweep: Sweep) -> None:
    server, sweep = guarded_prefect_server, completed_sweep
    assert {r["status"] for r in report_rows(sweep.store, sweep.params["sweep_name"])} == {"ok"}
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with server.client() as client:  # with the string: allowed
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[sweep.run_id])))
    names = {r.name.split(" (")[0] for r in runs if r.name.startswith(("train", "strip", "eval"))}
    assert names == {f"{stage} seed={seed}" for stage in ("train", "strip", "eval") for seed in (0, 1)}, names

    assert unauthenticated_status(server) == 401
    anonymous = {k: v for k, v in server.env().items() if k != "PREFECT_API_AUTH_STRING"}
    refused = subprocess.run([venv_script("prefect"), "deployment", "run", "ito-sweep/local"], env=anonymous,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "401" in refused.stdout + refused.stderr, refused

    places = {str(p): p.read_bytes() for root in (sweep.store, sweep.work, server.home, sweep.served_log.parent)
              for p in root.rglob("*") if p.is_file() and p.name != "prefect-auth"}
    assert any(p.endswith("prefect.db") for p in places) and any(p.endswith("serve.log") for p in places)
    assert any("/jobs/" in p and p.endswith("_log.err") for p in places), "the job logs were scanned"
    password = server.auth.split(":", 1)[1].encode()
    leaks = [place for place, data in places.items() if password in data]
    assert not leaks, leaks


def test_a_dry_run_plans_and_a_config_error_fails_in_one_line(
        guarded_prefect_server: PrefectServer, completed_sweep: Sweep, tmp_path: Path) -> None:
    server, folder = guarded_prefect_server, completed_sweep.served_log.parent / "bad"
    folder.mkdir()
    store = tmp_path / "store"
    planned = {**completed_sweep.params, "storage_root": str(store), "sweep_name": "planned", "dry_run": True}
    bad = {**completed_sweep.params, "overrides": [*completed_sweep.params["overrides"], "ito.imagez=2"]}
    with serving(server, folder, ("local",)) as served:
        code, output, run_id = server.run_deployment("ito-sweep/local", planned, timeout_s=120)
        assert code == 0, f"{output}\n--- served ---\n{served.log_tail()}"
        code, output, bad_id = server.run_deployment("ito-sweep/local", bad, timeout_s=120)
        log = served.log_tail(50_000)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with server.client() as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["plan-planned"])))
    plan = [str(a.data) for a in artifacts if str(a.flow_run_id) == run_id]
    assert plan and "# Plan of sweep planned: 2 grid points (nothing submitted)" in plan[0]
    assert plan[0].count("| run | run | run | run |") == 2 and not store.exists(), "a dry run writes nothing"

    state = server.wait_final(bad_id, timeout_s=60)
    message = "config ito.imagez: no such key; did you mean ito.images?"
    assert code == 1 and state.is_failed() and state.message.startswith(message) and "\n" not in state.message
    assert message in log and "Engine execution exited with unexpected exception" not in log + output
    assert "Traceback" not in log, log


def test_a_new_server_on_an_empty_database_skips_every_committed_stage(
        guarded_prefect_server: PrefectServer, completed_sweep: Sweep) -> None:
    server, sweep = guarded_prefect_server, completed_sweep
    before, jobs = manifest_mtimes(sweep.store), submitted_jobs(sweep.work)
    assert len(jobs) == 2 and len(before) >= 2 * 3 + 1, "two points trained, stripped and evaluated"

    server.stop()
    for path in server.database_files():
        path.unlink()
    server.start()
    with server.client() as client:
        assert client.read_deployments() == [], "a new, empty database"

    folder = sweep.served_log.parent / "again"
    folder.mkdir()
    with serving(server, folder, ("local",)) as served:
        code, output, _ = server.run_deployment("ito-sweep/local", sweep.params)
        log = served.log_tail(200_000)
    assert code == 0, f"{output}\n--- served ---\n{log}"
    assert manifest_mtimes(sweep.store) == before, "no stage was redone"
    assert submitted_jobs(sweep.work) == jobs, "no training job was submitted"
    assert log.count("/train already committed, skipping") == 2 and "submitted job" not in log, \
        "both trainings were skipped, found in the store"


def test_serve_with_a_wrong_or_missing_auth_string_ends_in_one_line_naming_it(
        guarded_prefect_server: PrefectServer) -> None:
    server = guarded_prefect_server
    anonymous = {k: v for k, v in server.env().items() if k != "PREFECT_API_AUTH_STRING"}
    for env, state in ((server.env(PREFECT_API_AUTH_STRING="ito:wrong"), "was refused"), (anonymous, "is not set")):
        done = subprocess.run([venv_script("ito-sweep"), "serve"], env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done
        assert done.stderr.splitlines() == [f"ito-sweep: preflight prefect: failed: PREFECT_API_URL={server.api_url} "
                                            f"answered 401: PREFECT_API_AUTH_STRING {state}; set it to the server's "
                                            "user:password (its PREFECT_SERVER_API_AUTH_STRING)"], done.stderr
