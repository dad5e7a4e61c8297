"""The sweep flow holds a bounded number of threads however many grid points it has: its stage runners
(``flows.sweep.StageRunners``) on Prefect's real engine (ephemeral server), the stages replaced by tasks that take a
moment and count the threads alive while they run. Before, every point's strip and eval took a thread of the flow's
unbounded pool at submission, waiting there for the point's training (a 128-point live sweep: 314 threads)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prefect import flow, task
from prefect.futures import wait

from flows import sweep
from ito_core.config import load_config

WIDTH = 3
peak_threads: list[int] = []


def busy(stage: str) -> dict[str, Any]:
    peak_threads.append(threading.active_count())
    time.sleep(0.05)
    return {"stage": stage}


@task
def fake_train(cfg: Any, data_keys: Any, key: str, label: str = "") -> dict[str, Any]:
    return busy("train")


@task
def fake_strip(cfg: Any, key: str, label: str = "") -> dict[str, Any]:
    return busy("strip")


@task
def fake_eval(cfg: Any, data_keys: Any, key: str, label: str = "") -> dict[str, Any]:
    return busy("eval")


@task
def fake_prep() -> dict[str, str]:
    return {"train": "data/train-x"}


@flow
def points_flow(points: int) -> list[str]:
    cfg = load_config([])
    data = fake_prep.submit()
    with sweep.StageRunners.opened(WIDTH) as runners:
        stages = [sweep.submit_point(cfg, f"run{i}", data, runners) for i in range(points)]
        wait([future for point in stages for future in point.values()])
    return [point["eval"].result()["stage"] for point in stages]


@pytest.fixture
def fake_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(sweep, "train_task", fake_train)
    monkeypatch.setattr(sweep, "strip_task", fake_strip)
    monkeypatch.setattr(sweep, "eval_task", fake_eval)


def peak_for(points: int) -> int:
    peak_threads.clear()
    assert points_flow(points) == ["eval"] * points, "every point ran its three stages in order"
    return max(peak_threads)


def test_the_flow_holds_the_same_threads_for_4_and_16_points(fake_stages: None) -> None:
    small, large = peak_for(4), peak_for(16)
    # Unbounded, the 12 extra points would add 24 waiting strip and eval threads; bounded, none (a few of
    # Prefect's own helper threads may come and go between the runs).
    assert large - small <= 4, f"peak threads: {small} for 4 points, {large} for 16"
