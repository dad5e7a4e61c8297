"""Job plumbing that needs no scheduler: the eval job's share of the training cluster settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.executors import slurm_parameters
from cluster.jobs import eval_cluster
from ito_core.config import ClusterConfig, validate_cluster


@pytest.mark.parametrize(("gpus", "eval_gpus"), [(8, 1), (0, 0)])
def test_eval_job_is_one_task_with_at_most_one_gpu(gpus: int, eval_gpus: int, tmp_path: Path) -> None:
    train = ClusterConfig(kind="slurm", nodes=4, tasks_per_node=gpus or 2, gpus_per_node=gpus, partition="gpu",
                          account="proj", timeout_min=240, extra_sbatch={"exclusive": True})
    cfg = eval_cluster(train)
    validate_cluster(cfg)  # a valid cluster config on its own
    params = slurm_parameters(cfg, name="ito-eval")
    assert (params["nodes"], params["ntasks_per_node"], params.get("gpus_per_node", 0)) == (1, 1, eval_gpus)
    assert (params["partition"], params["account"], params["time"]) == ("gpu", "proj", 240)
    assert train.nodes == 4  # the training settings are left alone
