"""A sweep evaluated on the user's own set only (no embedded eval set): its metrics are the report's columns
in report.md (a table of their own), report.csv and the plots."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from e2e.test_sweep_flow import SMALL_BUDGET, prefect_home  # noqa: F401 - prefect_home is a fixture used below
from unit.eval.test_user_sets import NO_EMBEDDED, write_class_tree

from flows.plots import plotted
from flows.report import report_rows
from ito_core.config import PLOT_METRICS


def test_a_sweep_on_a_user_set_reports_its_metrics(prefect_home: Path) -> None:  # noqa: F811
    from flows.sweep import ito_sweep

    tree = write_class_tree(prefect_home / "colours", per_class=4)
    for image in tree.rglob("*.png"):  # captions make it a retrieval and modality-gap set too
        image.with_suffix(".txt").write_text(f"a {image.parent.name} picture\n")
    overrides = [*SMALL_BUDGET, "ito.fusion=none", "ito.images=1,2", *NO_EMBEDDED, "eval.umap_points=0",
                 f"+eval.datasets.colours=folder:{tree}", "eval.zero_shot=colours", "eval.retrieval=colours",
                 "eval.modality_gap=colours", f"storage.root={prefect_home / 'store'}",
                 f"cluster.work_dir={prefect_home / 'work'}"]
    markdown = ito_sweep(overrides=overrides, sweep_name="mine")

    report = prefect_home / "store" / "sweeps" / "mine"
    rows = list(csv.DictReader(io.StringIO((report / "report.csv").read_text())))
    assert [r["ito.images"] for r in rows] == ["1", "2"] and {r["status"] for r in rows} == {"ok"}
    for metric in ("colours/acc1", "colours/image_retrieval_recall@1", "colours/centroid_distance"):
        assert all(float(r[metric]) >= 0.0 for r in rows), metric
    assert not any(c.startswith(("fashion_mnist/", "shapes/")) for c in rows[0])
    assert "### colours\n\n| ito.images | acc1 |" in markdown and (report / "report.md").read_text() == markdown
    assert (report / "plot-ito.images.png").read_bytes().startswith(b"\x89PNG")
    results = json.loads((report / "results.json").read_text())["points"]
    assert set(plotted(report_rows(results, ["ito.images"]), list(PLOT_METRICS))) >= {
        "colours/acc1", "colours/image_retrieval_recall@1", "colours/centroid_distance", "final_align_loss"}
