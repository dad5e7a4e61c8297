"""Job plumbing that needs no scheduler: the eval job's share of the training cluster settings, the thread cap."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from cluster.executors import check_cluster
from cluster.executors.slurm import slurm_parameters
from cluster.jobs import THREAD_ENV_VARS, cap_threads, eval_cluster, master_port, torch_threads
from ito_core.config import ClusterConfig


@pytest.mark.parametrize(("gpus", "eval_gpus"), [(8, 1), (0, 0)])
def test_eval_job_is_one_task_with_at_most_one_gpu(gpus: int, eval_gpus: int, tmp_path: Path) -> None:
    train = ClusterConfig(kind="slurm", nodes=4, tasks_per_node=gpus or 2, gpus_per_node=gpus, partition="gpu",
                          account="proj", timeout_min=240, extra_sbatch={"exclusive": True})
    cfg = eval_cluster(train)
    check_cluster(cfg)  # a valid cluster config on its own
    params = slurm_parameters(cfg, name="ito-eval")
    assert (params["nodes"], params["ntasks_per_node"], params.get("gpus_per_node", 0)) == (1, 1, eval_gpus)
    assert (params["partition"], params["account"], params["time"]) == ("gpu", "proj", 240)
    assert train.nodes == 4  # the training settings are left alone


@pytest.mark.parametrize(("cpus", "workers", "override", "threads"),
                         [(1, 1, 0, 1), (8, 2, 0, 6), (4, 0, 0, 4), (2, 4, 0, 1), (8, 2, 3, 3)])
def test_torch_threads_come_from_the_job_cpus_less_the_loader_workers(cpus: int, workers: int, override: int,
                                                                     threads: int) -> None:
    assert torch_threads(ClusterConfig(cpus_per_task=cpus, torch_threads=override), workers) == threads


def test_cap_threads_sets_torch_and_the_workers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    try:
        cap_threads(ClusterConfig(kind="local", cpus_per_task=3), num_workers=1)
        assert torch.get_num_threads() == 2
        assert all(os.environ[name] == "1" for name in THREAD_ENV_VARS)
    finally:
        torch.set_num_threads(before)


def test_a_debug_job_leaves_the_callers_threads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SUBMITIT_DEBUG_JOB_ID", "1")  # what submitit's DebugJob sets while it runs the job
    before = torch.get_num_threads()
    cap_threads(ClusterConfig(kind="debug", cpus_per_task=1, torch_threads=1), num_workers=0)
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


def test_each_attempt_of_a_requeued_job_rendezvous_on_its_own_port() -> None:
    """A requeued job keeps its id: its next attempt must not bind the port its last attempt's rank 0 may hold."""
    ports = [master_port("4242", attempt=attempt) for attempt in range(20)]
    assert len(set(ports)) == len(ports) and all(20000 <= port <= 60000 for port in ports)
    assert master_port("4242", attempt=3) == ports[3], "every rank of one attempt agrees"
