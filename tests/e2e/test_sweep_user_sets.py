"""A sweep evaluated on the user's own set only (no embedded eval set): its metrics are the report's columns
in report.md (a table of their own), report.csv and the plots; over two seeds, the report's statistics (arms,
the comparison with the baseline arm) cover them in every output, the Prefect artifact included."""

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
    overrides = [*SMALL_BUDGET, "ito.fusion=none", "ito.images=1,2", "seed=0,1", *NO_EMBEDDED, "eval.umap_points=0",
                 f"+eval.datasets.colours=folder:{tree}", "eval.zero_shot=colours", "eval.retrieval=colours",
                 "eval.modality_gap=colours", f"storage.root={prefect_home / 'store'}",
                 f"cluster.work_dir={prefect_home / 'work'}"]
    markdown = ito_sweep(overrides=overrides, sweep_name="mine")

    report = prefect_home / "store" / "sweeps" / "mine"
    rows = list(csv.DictReader(io.StringIO((report / "report.csv").read_text())))
    assert [(r["ito.images"], r["seed"]) for r in rows] == [("1", "0"), ("1", "1"), ("2", "0"), ("2", "1")]
    assert {r["status"] for r in rows} == {"ok"}
    for metric in ("colours/acc1", "colours/image_retrieval_recall@1", "colours/centroid_distance"):
        assert all(float(r[metric]) >= 0.0 for r in rows), metric
    assert not any(c.startswith(("fashion_mnist/", "shapes/")) for c in rows[0])
    assert "### colours\n\n| ito.images | seed | acc1 |" in markdown and (report / "report.md").read_text() == markdown
    assert "### colours\n\n| ito.images | n | acc1 |" in markdown, "the arms' table"
    assert "## Against the baseline `ito.images=1`" in markdown and "| 2 | 2 | " in markdown
    assert (report / "plot-ito.images.png").read_bytes().startswith(b"\x89PNG")
    results = json.loads((report / "results.json").read_text())
    assert set(plotted(report_rows(results["points"], ["ito.images"]), list(PLOT_METRICS))) >= {
        "colours/acc1", "colours/image_retrieval_recall@1", "colours/centroid_distance", "final_align_loss"}
    arms = list(csv.DictReader(io.StringIO((report / "arms.csv").read_text())))
    acc = {r["ito.images"]: r for r in arms if r["metric"] == "colours/acc1"}
    assert set(acc) == {"1", "2"} and {r["n"] for r in acc.values()} == {"2"}
    comparisons = [r for r in csv.DictReader(io.StringIO((report / "comparisons.csv").read_text()))
                   if r["metric"] == "colours/acc1"]
    assert len(comparisons) == 1 and comparisons[0]["ito.images"] == "2" and comparisons[0]["n"] == "2"
    assert comparisons[0]["verdict"] in ("above", "below", "within noise")
    assert results["statistics"]["baseline"] == {"ito.images": "1"} and results["statistics"]["comparisons"]
    assert not (report / "plot-seed.png").exists(), "the replicate axis gets no plot of its own"

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.sweep import artifact_key

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            artifact_key("mine")])))
    assert artifacts and "## Against the baseline `ito.images=1`" in str(artifacts[-1].data)
