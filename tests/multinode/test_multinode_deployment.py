"""``prefect deployment run 'ito-sweep/slurm'`` end to end on the multi-node cluster, as a user runs it: a real
Prefect server, ``ito-sweep serve`` on the login node (mnctl: its flow runs submit with sbatch from there), every
point's training as one 2-node job and its eval as a one-task job, artifacts on an S3 server the nodes reach, the
report in S3.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.multinode_cluster import MultiNodeCluster
from fixtures.prefect_server import Background, PrefectServer, running_prefect_server, serving
from fixtures.s3_server import S3Bucket, S3Server
from integration.test_prefect_deployment import aws_env, sweep_overrides

from ito_core.storage import MANIFEST

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def mn_prefect_server(multinode_cluster: MultiNodeCluster,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A Prefect server the login node reaches (bound to the root namespace's cluster address)."""
    with running_prefect_server(tmp_path_factory.mktemp("mn_prefect_server"), multinode_cluster.host_address) as server:
        yield server


@pytest.fixture(scope="module")
def served_on_login_node(multinode_cluster: MultiNodeCluster, mn_prefect_server: PrefectServer,
                         mn_s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    login = (str(multinode_cluster.directory / "mnexec"), "mnctl")
    with serving(mn_prefect_server, tmp_path_factory.mktemp("served"), on=login, **aws_env(mn_s3_server)) as process:
        yield process


def test_slurm_deployment_runs_two_node_jobs_from_the_login_node(
        mn_prefect_server: PrefectServer, served_on_login_node: Background, mn_bucket: S3Bucket,
        tmp_path: Path) -> None:
    sweep = f"mn-{tmp_path.name}"
    grid = ("ito.images=1,2", "ito.fusion=none", "cluster.nodes=2", "cluster.tasks_per_node=1",
            "cluster.timeout_min=20", f"storage.endpoint_url={mn_bucket.server.endpoint_url}")
    params = {"overrides": sweep_overrides(tmp_path, *grid), "sweep_name": sweep,
              "storage_root": mn_bucket.url("store"), "max_concurrent_train": 2}
    code, output, _ = mn_prefect_server.run_deployment("ito-sweep/slurm", params)
    assert code == 0, f"{output}\n--- served process ---\n{served_on_login_node.log_tail()}"

    rows = list(csv.DictReader(io.StringIO(mn_bucket.read(f"store/sweeps/{sweep}/report.csv").decode())))
    assert sorted(r["ito.images"] for r in rows) == ["1", "2"] and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        train = json.loads(mn_bucket.read(f"store/{row['run']}/train/{MANIFEST}"))
        manifest = json.loads(mn_bucket.read(f"store/{row['run']}/checkpoints/{train['checkpoint']}/{MANIFEST}"))
        assert manifest["world_size"] == 2
        assert train["config"]["cluster"]["kind"] == "slurm" and train["config"]["cluster"]["nodes"] == 2
    train_jobs = list((tmp_path / "work").glob("runs/*/jobs/*_submission.sh"))
    assert len(train_jobs) == 2 and all("#SBATCH --nodes=2" in s.read_text() for s in train_jobs)
    eval_jobs = list((tmp_path / "work").glob("runs/*/eval-jobs/*_submission.sh"))  # eval.executor=auto on SLURM
    assert len(eval_jobs) == 2 and all("#SBATCH --nodes=1" in s.read_text() for s in eval_jobs)
    assert "submitted job" in served_on_login_node.log_tail(100_000)
