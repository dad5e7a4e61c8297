"""A training task waiting for its ``ito-train`` slot rides out a Prefect server restart (issue 27).

The server-wide limit ``ito-train`` (made as ``prefect concurrency-limit create ito-train 1`` makes it) is full:
the test holds its one slot. A one-point sweep's training task waits for it; the server stops for longer than the
served process's Prefect client retries a request, and starts again on the same port and database; the test then
frees its slot. The run ends Completed without a retry, its training job ran once, and no slot stays taken.
Before ``flows.train_slot`` the task (tagged ``ito-train``, its slot taken by Prefect's engine) ended ``Pending``
and the flow run failed with ``ConcurrencySlotAcquisitionError``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest
from fixtures.prefect_server import Background, PrefectServer, serving
from integration.test_faults_prefect import Deployment, wait_until
from integration.test_prefect_deployment import sweep_overrides

from flows.grid import expand_grid
from flows.train_slot import LIMIT_NAME, TRAIN_TAG
from ito_core.artifacts import run_key
from ito_core.config import load_config

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(1200)]

CLIENT_RETRIES = 3  # the served process's Prefect client retries a request ~14 s (2 + 4 + 8 s, +-20 %)
OUTAGE_S = 25  # longer than those retries: Prefect's own slot acquisition gives up within it


@pytest.fixture(scope="module")
def served(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with serving(prefect_server, tmp_path_factory.mktemp("served_slot"), ("local",),
                 PREFECT_CLIENT_MAX_RETRIES=str(CLIENT_RETRIES)) as process:
        yield process


@pytest.fixture
def full_train_limit(prefect_server: PrefectServer) -> Iterator[UUID]:
    """The ``ito-train`` limit with 1 slot, that slot held by the test: yields the lease to release."""
    with prefect_server.client() as client:
        client.create_concurrency_limit(tag=TRAIN_TAG, concurrency_limit=1)
        taken = client.increment_concurrency_slots_with_lease(names=[LIMIT_NAME], slots=1, mode="concurrency",
                                                              lease_duration=600)
    try:
        yield UUID(taken.json()["lease_id"])
    finally:
        with prefect_server.client() as client:
            client.delete_concurrency_limit_by_tag(TRAIN_TAG)


def active_slots(server: PrefectServer) -> int:
    with server.client() as client:
        return client.read_global_concurrency_limit_by_name(LIMIT_NAME).active_slots


def training_is_running(server: PrefectServer, key: str) -> bool:
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with server.client() as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=key)))
    return any(r.name.startswith("train") and r.state is not None and r.state.is_running() for r in runs)


def test_a_task_waiting_for_its_slot_rides_out_a_server_restart(
        prefect_server: PrefectServer, served: Background, full_train_limit: UUID, tmp_path: Path) -> None:
    overrides = sweep_overrides(tmp_path, "ito.images=2", "ito.fusion=none", "eval.linear_probe=",
                                "eval.modality_gap=")
    key, jobs = run_key(load_config(expand_grid(overrides)[0])), tmp_path / "work"
    params = {"overrides": overrides, "sweep_name": f"slot-{tmp_path.name}", "storage_root": str(tmp_path / "store")}
    run = Deployment(prefect_server, params)
    run.start()

    wait_until(lambda: training_is_running(prefect_server, key), "the training task starting")
    time.sleep(3)  # it asks for the slot and gets 423 (full) in a loop
    assert not (jobs / key / "jobs").exists(), "no training job before a slot is free"
    assert active_slots(prefect_server) == 1

    prefect_server.stop()
    time.sleep(OUTAGE_S)
    prefect_server.start()
    with prefect_server.client() as client:
        client.release_concurrency_slots_with_lease(full_train_limit)  # its lease outlived the restart

    run.join(600)
    assert run.result is not None, "the deployment run did not end"
    state = prefect_server.wait_final(run.result[2], timeout_s=300)  # `--watch` may exit 1 across a restart
    log = served.log_tail(200_000)
    assert state.is_completed(), f"{state}\n--- served ---\n{log[-6000:]}"
    assert "Prefect server unreachable while taking an ito-train slot" in log, "the outage fell in the wait"
    assert len(list((jobs / key / "jobs").glob("*_submitted.pkl"))) == 1, "one training job"
    assert active_slots(prefect_server) == 0, "the task's slot was released, none leaked"
