"""The executor table: validation, eval placement and the plan read it, its names match configs/cluster/, and an
executor defined outside cluster/executors (tests/fixtures/process_executor.py) joins by registering alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures.process_executor import NAME

from cluster.executors import EXECUTORS, Executor, build_executor, eval_executor
from flows.grid import validated_grid
from flows.plan import plan_sweep
from ito_core.config import CONFIG_DIR, load_config


def test_every_cluster_config_names_a_registered_executor() -> None:
    kinds = {yaml.safe_load(path.read_text())["kind"] for path in (Path(CONFIG_DIR) / "cluster").glob("*.yaml")}
    assert kinds == {"debug", "local", "slurm"} <= set(EXECUTORS)


@pytest.mark.parametrize(("overrides", "key", "fix"), [
    (["cluster.kind=k8s"], "cluster.kind", "choose one of ['debug', 'local', 'slurm']"),
    (["cluster.kind=local", "cluster.nodes=2"], "cluster.nodes", "use cluster.kind=slurm for multi-node jobs"),
    (["cluster=debug", "cluster.tasks_per_node=2"], "cluster.tasks_per_node", "use cluster.kind=local"),
    (["cluster=slurm", "cluster.work_dir=/tmp/100%"], "cluster.work_dir", "without '%'"),
    (["cluster=slurm", "+cluster.extra_sbatch.time=10"], "cluster.extra_sbatch.time", "set that instead"),
    (["cluster=slurm", "cluster.partition=a b"], "cluster.partition", "is not a SLURM partition name"),
    (["cluster=slurm", "cluster.submit_rate_per_s=0"], "cluster.submit_rate_per_s", "use a number > 0"),
    (["cluster=slurm", "cluster.submit_retry_s=-1"], "cluster.submit_retry_s", "use seconds >= 0"),
])
def test_executor_rules_refuse_the_grid_before_any_job(overrides: list[str], key: str, fix: str) -> None:
    with pytest.raises(ValueError, match=f"^config {key}: ") as err:
        validated_grid(overrides, config_name="config")
    assert fix in str(err.value)


@pytest.mark.parametrize(("overrides", "where"), [
    ([], "inprocess"), (["cluster=debug"], "inprocess"), (["cluster=slurm"], "job"),
    (["cluster=slurm", "eval.executor=inprocess"], "inprocess"), (["eval.executor=job"], "job"),
])
def test_eval_runs_in_a_job_where_jobs_run_elsewhere_unless_told_otherwise(overrides: list[str], where: str) -> None:
    assert eval_executor(load_config(overrides)) == where


def test_an_executor_from_a_test_module_validates_builds_and_previews(process_executor: Executor,
                                                                     tmp_path: Path) -> None:
    where = [f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}"]
    _, configs = validated_grid([f"cluster.kind={NAME}", *where], config_name="config")
    assert eval_executor(configs[0]) == "inprocess"
    assert type(build_executor(configs[0].cluster, tmp_path / "jobs")).__name__ == "ProcessExecutor"
    with pytest.raises(ValueError, match="^config cluster.gpus_per_node: 1 with cluster.kind=process_test"):
        validated_grid([f"cluster.kind={NAME}", "cluster.gpus_per_node=1", "cluster.tasks_per_node=1", *where],
                       config_name="config")
    text = plan_sweep([f"cluster.kind={NAME}", *where])
    assert f"{NAME} controller: `python -m submitit.local._local {tmp_path / 'work'}/runs/" in text
    assert not (tmp_path / "work").exists(), "the plan built nothing"


def test_without_registering_the_test_executor_is_refused() -> None:
    with pytest.raises(ValueError, match=f"^config cluster.kind: '{NAME}' is not supported"):
        validated_grid([f"cluster.kind={NAME}"], config_name="config")
