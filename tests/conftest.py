"""Markers by directory (so nobody forgets them) and a quiet, fast CPU environment for every test."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["fixtures.tiny_run", "fixtures.s3_server", "fixtures.slurm_cluster", "fixtures.postgres",
                  "fixtures.prefect_server", "fixtures.faults", "fixtures.multinode_cluster", "fixtures.slurm_jobs",
                  "fixtures.process_executor"]

DIR_MARKERS = {"integration": ("integration", "slow"), "e2e": ("e2e", "slow", "integration"),
               "multinode": ("multinode", "integration", "slow", "distributed")}

# Before anything imports deepspeed/prefect: CPU accelerator, one thread per rank, offline Prefect.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")  # 20 s is missed under load
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(Path(__file__).parent).parts
        for marker in DIR_MARKERS.get(parts[0], ()):
            item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def stop_ephemeral_prefect_servers() -> Iterator[None]:
    """Stop the temporary servers of Prefect's ephemeral mode while pytest still owns stdout; left to
    atexit, their "Stopping temporary server" log line hits a closed stream after the summary."""
    yield
    if "prefect.server.api.server" in sys.modules:
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):  # private, but Prefect has no public handle
            server.stop()


@pytest.fixture(scope="module", autouse=True)
def plain_linear_after_each_module() -> Iterator[None]:
    """Undo what an in-process ZeRO-3 engine leaves behind, which a job's own process never outlives: DeepSpeed
    swaps ``torch.nn.functional.linear`` for its memory-efficient version ("persists unless manually reset"), whose
    sums differ in the last bits, so later modules' golden numerics would change. (The process group stays: DeepSpeed
    caches its groups, so the session keeps one, see ``fixtures.tiny_run.one_rank_group``.)"""
    yield
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.nn.functional.linear = torch._C._nn.linear  # the builtin that functional.linear is in plain torch
