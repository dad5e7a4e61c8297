"""A job submitted from a shell that already has torch's rendezvous variables (a torchrun shell, an earlier job):
the job's own submitit/SLURM values win, so its tasks form the one group the config asks for.

Real submitit local jobs (processes, no torch); the 2-node SLURM version is tests/multinode/test_multinode_sweep.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.executors import build_executor
from cluster.jobs import DIST_VARS, export_distributed_env
from ito_core.config import ClusterConfig
from ito_core.distributed import check_rendezvous_env
from ito_core.train import check_world_size


def _exported() -> dict[str, str]:
    export_distributed_env()
    return {name: os.environ.get(name, "") for name in DIST_VARS}


@pytest.mark.parametrize("inherited", [{"MASTER_PORT": "29571"},
                                       {"MASTER_PORT": "29571", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}])
def test_two_task_job_forms_one_group_despite_inherited_variables(
        inherited: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in inherited.items():
        monkeypatch.setenv(name, value)  # the local executor, like sbatch, passes the environment on
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the job unpickles _exported from here
    job = build_executor(ClusterConfig(kind="local", tasks_per_node=2, timeout_min=5), tmp_path).submit(_exported)
    tasks = job.results()
    assert sorted(task["RANK"] for task in tasks) == ["0", "1"]
    assert {task["WORLD_SIZE"] for task in tasks} == {"2"}
    assert len({(task["MASTER_ADDR"], task["MASTER_PORT"]) for task in tasks}) == 1, "one rendezvous point"
    assert tasks[0]["MASTER_PORT"] != "29571", "the job's own port, not the shell's"
    inherited_list = ", ".join(f"{name}={value}" for name, value in inherited.items())
    assert f"ignoring {inherited_list} inherited" in Path(job.task(0).paths.stderr).read_text()


def test_a_half_set_environment_names_the_variables() -> None:
    with pytest.raises(ValueError, match=r"RANK=0, WORLD_SIZE=2 set but MASTER_ADDR, MASTER_PORT not.*unset RANK"):
        check_rendezvous_env({"RANK": "0", "WORLD_SIZE": "2"})
    check_rendezvous_env({})  # a lone process makes its own group
    check_rendezvous_env({"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "mn1", "MASTER_PORT": "29500"})


def test_training_stops_when_the_group_is_not_the_configured_one(tmp_path: Path) -> None:
    from fixtures.tiny_run import tiny_config

    from ito_core.distributed import DistEnv

    cfg = tiny_config(tmp_path, "cluster=slurm", "cluster.nodes=2", "cluster.tasks_per_node=1")
    check_world_size(cfg, DistEnv(rank=0, local_rank=0, world_size=2))
    with pytest.raises(ValueError, match=r"cluster.nodes x cluster.tasks_per_node = 2 x 1 = 2 ranks.*world size 1"):
        check_world_size(cfg, DistEnv(rank=0, local_rank=0, world_size=1))
