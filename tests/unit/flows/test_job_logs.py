"""A stage's job logs are copied to the store beside the run (Prefect only gets their warnings, errors, progress)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.stages import keep_logs
from ito_core.storage.local import LocalStore


def fake_job(folder: Path, num_tasks: int) -> SimpleNamespace:
    def task(index: int) -> SimpleNamespace:
        return SimpleNamespace(paths=SimpleNamespace(stdout=folder / f"7_{index}_log.out",
                                                     stderr=folder / f"7_{index}_log.err"))
    return SimpleNamespace(job_id="7", num_tasks=num_tasks, task=task, paths=SimpleNamespace(folder=folder))


def test_every_ranks_logs_are_copied(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for rank in range(2):
        (jobs / f"7_{rank}_log.err").write_text(f"rank {rank} step 1\nrank {rank} step 2\n")
        (jobs / f"7_{rank}_log.out").write_text(f"rank {rank} out\n")
    store = LocalStore(tmp_path / "store")
    keep_logs(store, fake_job(jobs, 2), "runs/abc/logs/train", logging.getLogger("test"))
    copied = tmp_path / "store/runs/abc/logs/train"
    assert sorted(p.name for p in copied.iterdir()) == ["7_0_log.err", "7_0_log.out", "7_1_log.err", "7_1_log.out"]
    assert (copied / "7_1_log.err").read_text() == "rank 1 step 1\nrank 1 step 2\n"


def test_a_failed_copy_is_a_warning_not_a_failed_stage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "7_0_log.err").write_text("x\n")

    class BrokenStore(LocalStore):
        def write_text(self, key: str, text: str) -> None:
            raise OSError("S3 down")

    with caplog.at_level(logging.WARNING):
        keep_logs(BrokenStore(tmp_path / "store"), fake_job(tmp_path, 1), "runs/abc/logs/eval", logging.getLogger("t"))
    assert "rank logs not copied" in caplog.text and "S3 down" in caplog.text
