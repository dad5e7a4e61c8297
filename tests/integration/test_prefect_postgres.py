"""The team set-up of docs/CLUSTER.md: a Prefect server with basic auth on PostgreSQL (cluster/postgres-up.sh).

A one-point sweep runs through ``prefect deployment run 'ito-sweep/local'`` against it, served by
``ito-sweep serve``; its flow run, task runs and logs are rows in PostgreSQL, and the server wrote no SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.postgres import PostgresDatabase
from fixtures.prefect_server import Background, PrefectServer, serving
from integration.test_prefect_deployment import report_rows, sweep_overrides

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def served_on_postgres(postgres_prefect_server: PrefectServer,
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with serving(postgres_prefect_server, tmp_path_factory.mktemp("served_pg"), deployments=("local",)) as process:
        yield process


def test_a_deployment_runs_against_a_server_on_postgres(
        postgres_prefect_server: PrefectServer, postgres_database: PostgresDatabase,
        served_on_postgres: Background, tmp_path: Path) -> None:
    store, sweep = tmp_path / "store", f"pg-{tmp_path.name}"
    params = {"overrides": sweep_overrides(tmp_path, "ito.images=1", "ito.fusion=none"), "sweep_name": sweep,
              "storage_root": str(store)}
    code, output, run_id = postgres_prefect_server.run_deployment("ito-sweep/local", params)
    assert code == 0, f"{output}\n--- served process ---\n{served_on_postgres.log_tail()}"
    assert [row["status"] for row in report_rows(store, sweep)] == ["ok"]

    [[state]] = postgres_database.query(f"select state_type from flow_run where id = '{run_id}'")
    assert state == "COMPLETED"
    tasks = {name.split(" ")[0].split("-")[0] for [name] in postgres_database.query(  # "train ...", "report-a1b"
        f"select name from task_run where flow_run_id = '{run_id}'")}
    assert {"prep", "train", "strip", "eval", "report"} <= tasks
    [[logs]] = postgres_database.query(f"select count(*) from log where flow_run_id = '{run_id}'")
    assert int(logs) > 0
    assert not postgres_prefect_server.database_files(), "the server wrote a SQLite database"
