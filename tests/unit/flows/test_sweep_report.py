"""Report rendering: the table (markdown + CSV), the failed points with their error tail and how to
resume, and the PNG plots of the metrics against each grid axis."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest

from flows.plots import _lines, plot_metrics, plotted
from flows.report import ERROR_TAIL_LINES, TABLE_METRICS, render_report, report_rows, to_csv
from flows.sweep import artifact_key
from ito_core.config import PLOT_METRICS

AXES = ["ito.images", "ito.fusion"]
PLOTTED = list(PLOT_METRICS)


def _ok(images: int, fusion: str, acc: float) -> dict[str, Any]:
    return {"overrides": ["model=tiny", f"ito.images={images}", f"ito.fusion={fusion}"],
            "run_key": f"runs/{images}{fusion}", "status": "ok", "final_loss": 2.5,
            "final_align_loss": 2.0, "metrics": {"fashion_mnist/acc1": acc, "shapes/image_retrieval_recall@1": acc / 2}}


@pytest.fixture
def results() -> list[dict[str, Any]]:
    log = "\n".join(f"log line {i}" for i in range(40))
    failed = {"overrides": ["model=tiny", "ito.images=2", "ito.fusion=transformer"], "run_key": "runs/2transformer",
              "status": "failed", "stage": "train", "error": f"JobFailedError: job 123 failed\n{log}"}
    return [_ok(1, "none", 0.3), _ok(2, "none", 0.4), _ok(1, "transformer", 0.5), failed]


def test_rows_have_the_axes_status_and_metrics(results: list[dict[str, Any]]) -> None:
    rows = report_rows(results, AXES)
    assert list(rows[0]) == [*AXES, "run", "status", "fashion_mnist/acc1", "shapes/image_retrieval_recall@1",
                             "final_loss", "final_align_loss"]
    assert [r["status"] for r in rows] == ["ok", "ok", "ok", "failed (train)"]
    assert rows[3]["fashion_mnist/acc1"] == "" and rows[1]["fashion_mnist/acc1"] == 0.4
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert parsed[2] == {"ito.images": "1", "ito.fusion": "transformer", "run": "runs/1transformer", "status": "ok",
                         "fashion_mnist/acc1": "0.5", "shapes/image_retrieval_recall@1": "0.25", "final_loss": "2.5",
                         "final_align_loss": "2.0"}


def test_report_lists_failed_points_with_error_tail_and_resume(results: list[dict[str, Any]]) -> None:
    markdown = render_report(results, AXES, sweep="demo", where="/store/sweeps/demo", plots=["plot-ito.images.png"],
                             resume="`prefect flow-run retry abc`")
    assert markdown.startswith("# Sweep demo\n\n3/4 grid points ok; files in `/store/sweeps/demo`.")
    assert "| 2 | none | runs/2none | ok | 2.5000 | 2.0000 |" in markdown
    assert "### fashion_mnist\n\n| ito.images | ito.fusion | acc1 |" in markdown
    assert "### shapes\n\n| ito.images | ito.fusion | image_retrieval_recall@1 |" in markdown
    assert "| 2 | none | 0.2000 |" in markdown
    assert "- `plot-ito.images.png`" in markdown
    failures = markdown.split("## Failed grid points (1 of 4)")[1]
    assert "### ito.images=2 ito.fusion=transformer: train failed" in failures and "`runs/2transformer`" in failures
    assert "log line 39" in failures and f"log line {39 - ERROR_TAIL_LINES}" not in failures, "only the tail"
    assert "**How to resume:** `prefect flow-run retry abc`" in failures


def test_report_without_failures_has_no_failure_section(results: list[dict[str, Any]]) -> None:
    markdown = render_report(results[:3], AXES, sweep="s", where="w", plots=[], resume="r")
    assert "Failed" not in markdown and "resume" not in markdown and "Plots" not in markdown


def test_plots_one_png_per_axis_one_line_per_other_setting(results: list[dict[str, Any]], tmp_path: Path) -> None:
    rows = report_rows(results, AXES)
    assert plot_metrics(rows, AXES, tmp_path, PLOTTED) == ["plot-ito.images.png", "plot-ito.fusion.png"]
    assert all((tmp_path / name).read_bytes().startswith(b"\x89PNG") for name in ("plot-ito.images.png",))
    lines = _lines(rows, "ito.images", AXES, "fashion_mnist/acc1")
    means = {label: [(x, s.mean, s.n) for x, s in points] for label, points in lines.items()}
    assert means == {"ito.fusion=none": [("1", 0.3, 1), ("2", 0.4, 1)], "ito.fusion=transformer": [("1", 0.5, 1)]}, \
        "the failed point is left out; no seed axis: n=1 each"


def test_no_plot_without_successful_points(results: list[dict[str, Any]], tmp_path: Path) -> None:
    assert plot_metrics(report_rows(results[3:], AXES), AXES, tmp_path, PLOTTED) == []
    assert not list(tmp_path.iterdir())


def test_artifact_keys_are_what_prefect_accepts() -> None:
    assert artifact_key("Grow_test.run 1") == "sweep-grow-test-run-1"


def _user_set(images: int, acc: float) -> dict[str, Any]:
    """A point evaluated on user sets only (ImageNet zero-shot, COCO retrieval): no embedded set's name anywhere."""
    metrics = {"imagenet/acc1": acc, "imagenet/acc5": acc + 0.2, "imagenet/mean_per_class_recall": acc,
               **{f"coco/{d}_retrieval_recall@{k}": acc / k for d in ("image", "text") for k in (1, 5, 10)},
               "coco/centroid_distance": 0.8}
    return {"overrides": [f"ito.images={images}"], "run_key": f"runs/{images}", "status": "ok", "final_loss": 3.0,
            "final_align_loss": 2.0 + images / 10, "metrics": metrics}


def test_a_sweep_on_user_sets_shows_their_metrics_in_every_output(tmp_path: Path) -> None:
    results = [_user_set(1, 0.3), _user_set(2, 0.4)]
    rows = report_rows(results, ["ito.images"])
    assert {"imagenet/acc1", "imagenet/acc5", "coco/image_retrieval_recall@1", "coco/centroid_distance"} <= set(rows[0])
    assert list(csv.DictReader(io.StringIO(to_csv(rows))))[1]["imagenet/acc1"] == "0.4"
    markdown = render_report(results, ["ito.images"], sweep="s", where="w", plots=[], resume="r")
    assert "### imagenet\n\n| ito.images | acc1 | acc5 | mean_per_class_recall |" in markdown
    tables = markdown.split("### coco")[1:]
    assert len(tables) == 2, "7 coco metrics: two tables of at most 6 columns"
    assert all(len(line.split("|")) - 2 <= 1 + TABLE_METRICS for line in markdown.splitlines() if line.startswith("|"))
    assert plot_metrics(rows, ["ito.images"], tmp_path, PLOTTED) == ["plot-ito.images.png"]
    assert plotted(rows, PLOTTED) == ["imagenet/acc1", "coco/image_retrieval_recall@1", "coco/text_retrieval_recall@1",
                                      "coco/centroid_distance", "final_align_loss"]


def test_report_metrics_patterns_choose_the_columns() -> None:
    results = [_user_set(1, 0.3), _user_set(2, 0.4)]
    rows = report_rows(results, ["ito.images"], ["*/acc1", "coco/*@1"])
    assert [c for c in rows[0] if "/" in c] == ["imagenet/acc1", "coco/image_retrieval_recall@1",
                                                "coco/text_retrieval_recall@1"]


def test_a_one_point_report_shows_the_points_values() -> None:
    result = {**_user_set(2, 0.4), "overrides": ["experiment=demo", "ito.images=2", "model=tiny"]}
    markdown = render_report([result], [], sweep="s", where="w", plots=[], resume="r")
    assert "| experiment | ito.images | model | run | status |" in markdown
    assert "| demo | 2 | tiny | runs/2 | ok |" in markdown


def test_columns_do_not_depend_on_the_records_key_order() -> None:
    """Fresh eval records and the same records read back from the store (each record's keys sorted) give the same
    report."""
    fresh = _user_set(1, 0.3)
    sets = list(dict.fromkeys(name.split("/")[0] for name in fresh["metrics"]))
    stored = {**fresh, "metrics": dict(sorted(fresh["metrics"].items(), key=lambda kv: (sets.index(
        kv[0].split("/")[0]), kv[0])))}
    assert list(report_rows([fresh], ["ito.images"])[0]) == list(report_rows([stored], ["ito.images"])[0])
    columns = [c for c in report_rows([fresh], ["ito.images"])[0] if c.startswith("coco/")]
    assert columns.index("coco/image_retrieval_recall@5") < columns.index("coco/image_retrieval_recall@10")


def test_report_says_where_each_points_full_logs_are(results: list[dict[str, Any]]) -> None:
    markdown = render_report(results[:3], AXES, sweep="s", where="w", plots=[], resume="r",
                             logs="s3://b/store/<run>/logs/")
    assert "full job logs" in markdown and "`s3://b/store/<run>/logs/`" in markdown
    assert "full job logs" not in render_report(results[:3], AXES, sweep="s", where="w", plots=[], resume="r")
