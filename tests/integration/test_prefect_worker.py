"""The work-pool path of docs/CLUSTER.md: the repo's prefect.yaml deployed with
``prefect --no-prompt deploy --all``, a ``process`` worker runs the flow run.

The deployments and their pool get unique names (a copy of prefect.yaml), so the served deployments
of the other tests stay untouched. The grid has an invalid value and fails in seconds, before any
job: that proves the worker loaded the flow from prefect.yaml's entrypoint, with the deployment's
preset and the run's parameters, without paying for a training (the served tests do that).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from fixtures.prefect_server import Background, PrefectServer, venv_script

pytestmark = [pytest.mark.prefect_server, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_deploys_and_a_process_worker_runs_the_flow(prefect_server: PrefectServer,
                                                                   tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    pool, spec = f"ito-sweep-{suffix}", yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        deployment["name"] = f"{deployment['name']}-{suffix}"
        deployment["work_pool"]["name"] = pool
    (tmp_path / "prefect.yaml").write_text(yaml.safe_dump(spec))
    env, prefect = prefect_server.env(PREFECT_WORKER_QUERY_SECONDS="1"), venv_script("prefect")
    subprocess.run([prefect, "work-pool", "create", pool, "--type", "process"], env=env, check=True,
                   capture_output=True)
    subprocess.run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", str(tmp_path / "prefect.yaml")],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    with prefect_server.client() as client:
        slurm = client.read_deployment_by_name(f"ito-sweep/slurm-{suffix}")
    assert slurm.parameters == {"cluster": "slurm"} and slurm.work_pool_name == pool
    assert slurm.parameter_openapi_schema["properties"].keys() >= {"overrides", "max_concurrent_train", "storage_root"}

    worker = Background([prefect, "worker", "start", "--pool", pool], env, tmp_path / "worker.log", cwd=tmp_path)
    worker.start(lambda: "started" in worker.log_tail())
    try:
        code, output, run_id = prefect_server.run_deployment(f"ito-sweep/local-{suffix}",
                                                             {"overrides": ["ito.images=0"]}, timeout_s=180)
    finally:
        worker.stop()
    state = prefect_server.wait_final(run_id, timeout_s=10)
    assert code == 1 and state.is_failed(), f"{output}\n--- worker ---\n{worker.log_tail()}"
    assert "config ito.images: M=0" in state.message, state.message
