"""The whole sweep flow in Prefect's ephemeral mode, on a small budget: 4 grid points of the demo
grid through prep -> train (submitit local, DeepSpeed) -> strip -> eval -> report; a re-run skips
every committed stage."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from fixtures.tiny_run import TINY_RUN

SMALL_BUDGET = [*TINY_RUN[:-3], "experiment=demo", "data.max_train_samples=256", "data.shapes_eval=64",
                "eval.max_samples=64", "data.samples_per_shard=128", "train.steps=4", "train.checkpoint_every=4"]


@pytest.fixture
def prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path


def test_demo_grid_end_to_end_and_rerun_skips(prefect_home: Path) -> None:
    from flows.sweep import ito_sweep

    overrides = [*SMALL_BUDGET, f"storage.root={prefect_home / 'store'}", f"cluster.work_dir={prefect_home / 'work'}"]
    previous_umask = os.umask(0o022)  # a team's usual umask: every result must be readable by the others
    try:
        markdown = ito_sweep(overrides=overrides, sweep_name="e2e")
    finally:
        os.umask(previous_umask)
    private = [str(p) for p in Path(prefect_home, "store").rglob("*") if p.stat().st_mode & 0o044 != 0o044]
    assert not private, f"written without group/other read permission under umask 022: {private[:5]}"

    report = Path(prefect_home, "store", "sweeps", "e2e")
    rows = list(csv.DictReader(io.StringIO((report / "report.csv").read_text())))
    assert len(rows) == 4 and all(row["status"] == "ok" for row in rows)
    assert {(r["ito.images"], r["ito.fusion"]) for r in rows} == {("1", "none"), ("1", "transformer"),
                                                                   ("2", "none"), ("2", "transformer")}
    for row in rows:  # the demo's in-distribution and held-out columns
        for column in ("fashion_mnist/acc1", "shapes/image_retrieval_recall@1", "tuxpaint/acc1",
                       "tuxpaint/image_retrieval_recall@1", "shapes_heldout/acc1"):
            assert 0.0 <= float(row[column]) <= 1.0, column
    assert (report / "report.md").read_text() == markdown
    runs = sorted(p.name for p in Path(prefect_home, "store", "runs").iterdir())
    assert len(runs) == 4
    shared_prep = [p for p in Path(prefect_home, "store", "data").iterdir() if p.name.startswith("train-")]
    assert len(shared_prep) == 1, "grid points with the same data config share one prep artifact"

    mtimes = {p: p.stat().st_mtime_ns for p in Path(prefect_home, "store", "runs").rglob("manifest.json")}
    assert ito_sweep(overrides=overrides, sweep_name="e2e") == markdown
    assert mtimes == {p: p.stat().st_mtime_ns for p in Path(prefect_home, "store", "runs").rglob("manifest.json")}
