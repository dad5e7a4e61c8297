"""The report's replicate statistics against scipy on known data: arm intervals, paired comparisons and their
verdicts, the detectable difference (checked by simulating the t-test it promises), and the report's outputs."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from flows.grid import axis_values
from flows.plots import _lines, plot_metrics
from flows.replicates import (
    ABOVE,
    BELOW,
    NOISE,
    UNTESTED,
    compare_paired,
    detectable_difference,
    resolve_baseline,
    summarize,
)
from flows.report import render_report, report_rows, sweep_statistics, to_csv

VALUES = [0.61, 0.64, 0.66, 0.59, 0.65]


def test_arm_interval_equals_scipys_t_interval() -> None:
    summary = summarize(VALUES)
    low, high = stats.t.interval(0.95, len(VALUES) - 1, loc=np.mean(VALUES), scale=stats.sem(VALUES))
    assert summary.n == 5 and summary.mean == pytest.approx(np.mean(VALUES), abs=1e-15)
    assert summary.std == pytest.approx(np.std(VALUES, ddof=1), rel=1e-12)
    assert summary.interval == pytest.approx((low, high), rel=1e-12)


def test_one_value_has_no_interval() -> None:
    summary = summarize([0.5])
    assert (summary.n, summary.mean, summary.std, summary.interval) == (1, 0.5, None, None)


@pytest.mark.parametrize(("shift", "verdict"), [(0.03, ABOVE), (-0.03, BELOW), (0.002, NOISE)])
def test_paired_comparison_equals_scipys_paired_t_test(shift: float, verdict: str) -> None:
    rng = np.random.default_rng(0)
    base = {str(seed): v for seed, v in enumerate(VALUES)}
    arm = {seed: v + shift + float(rng.normal(0, 0.005)) for seed, v in base.items()}
    result = compare_paired(base, arm)
    reference = stats.ttest_rel(list(arm.values()), list(base.values()))
    low, high = reference.confidence_interval(0.95)
    assert result.n == 5 and result.verdict == verdict
    assert result.difference == pytest.approx((low + high) / 2, rel=1e-12)
    assert (result.difference - result.half_width, result.difference + result.half_width) == pytest.approx(
        (low, high), rel=1e-12)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert (result.p_value < 0.05) == (verdict != NOISE)


def test_pairing_is_by_replicate_not_by_order() -> None:
    """Seed 3 failed in the arm: the comparison uses the seeds both arms have, matched by seed."""
    base = {"0": 0.50, "1": 0.60, "2": 0.70, "3": 0.80}
    arm = {"2": 0.71, "0": 0.51, "1": 0.61}
    result = compare_paired(base, arm)
    assert result.n == 3 and result.difference == pytest.approx(0.01) and result.verdict == ABOVE


def test_fewer_than_two_pairs_are_not_tested() -> None:
    result = compare_paired({"0": 0.5}, {"0": 0.6})
    assert (result.n, result.verdict, result.half_width, result.detectable) == (1, UNTESTED, None, None)


@pytest.mark.parametrize("n", [3, 5, 10])
def test_detectable_difference_is_detected_with_80_percent_power(n: int) -> None:
    """Simulate the paired t-test at the stated difference: it rejects in 80 % of 20 000 trials (± 1 %)."""
    std = 0.02
    size = detectable_difference(std, n)
    diffs = np.random.default_rng(1).normal(size, std, size=(20_000, n))
    rejected = stats.ttest_1samp(diffs, 0.0, axis=1).pvalue < 0.05
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)
    assert size > stats.t.ppf(0.975, n - 1) * std / math.sqrt(n), "more than the interval's half width"


def test_baseline_defaults_to_the_first_value_of_the_first_arm_axis() -> None:
    axes = {"seed": ["0", "1"], "method": ["clip", "ito"], "lr": ["1e-3", "3e-3"]}
    assert resolve_baseline("", axes, "seed") == {"method": "clip"}
    assert resolve_baseline("lr=3e-3", axes, "seed") == {"lr": "3e-3"}


@pytest.mark.parametrize(("text", "problem"), [("model=vit", "'model' is not an axis"),
                                               ("method=slip", "method takes ['clip', 'ito']"),
                                               ("seed=0", "'seed' is not an axis"), ("method", "is not axis=value")])
def test_a_bad_baseline_names_the_setting_and_the_choices(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="report.baseline=") as err:
        resolve_baseline(text, {"seed": ["0", "1"], "method": ["clip", "ito"]}, "seed")
    assert problem in str(err.value)


def _point(method: str, fusion: str, seed: int, acc: float, status: str = "ok") -> dict[str, Any]:
    point = {"overrides": [f"method={method}", f"ito.fusion={fusion}", f"seed={seed}"],
             "run_key": f"runs/{method}{fusion}{seed}", "status": status, "final_loss": 2.0,
             "final_align_loss": 1.5, "in_distribution": ["fashion_mnist"]}
    if status == "ok":
        point["metrics"] = {"fashion_mnist/acc1": acc, "shapes/text_retrieval_recall@1": acc / 2}
    return point


@pytest.fixture
def sweep() -> list[dict[str, Any]]:
    accs = {("clip", "none"): [0.60, 0.62, 0.61], ("ito", "none"): [0.65, 0.66, 0.66],
            ("clip", "mlp"): [0.60, 0.63, 0.60], ("ito", "mlp"): [0.61, 0.62, 0.62]}
    points = [_point(m, f, seed, acc) for (m, f), values in accs.items() for seed, acc in enumerate(values)]
    points[-1] = _point("ito", "mlp", 2, 0.0, status="failed")
    return points


AXES = ["method", "ito.fusion", "seed"]


def test_statistics_group_by_the_other_axes_and_compare_within_them(sweep: list[dict[str, Any]]) -> None:
    rows = report_rows(sweep, AXES)
    result = sweep_statistics(rows, AXES, ["fashion_mnist/acc1"], replicate_axis="seed",
                              baseline={"method": "clip"})
    arms = {(a["method"], a["ito.fusion"]): a for a in result["arms"]}
    assert arms[("clip", "none")]["n"] == 3 and arms[("ito", "mlp")]["n"] == 2, "the failed seed is left out"
    assert arms[("clip", "none")]["mean"] == pytest.approx(0.61)
    comparisons = {(c["method"], c["ito.fusion"]): c for c in result["comparisons"]}
    assert set(comparisons) == {("ito", "none"), ("ito", "mlp")}, "each ito arm against clip at the same fusion"
    assert comparisons[("ito", "none")]["baseline"] == "method=clip ito.fusion=none"
    assert comparisons[("ito", "none")]["verdict"] == ABOVE
    assert comparisons[("ito", "mlp")]["n"] == 2 and comparisons[("ito", "mlp")]["verdict"] == NOISE
    parsed = list(csv.DictReader(io.StringIO(to_csv(result["comparisons"]))))
    assert {"method", "ito.fusion", "metric", "n", "difference", "ci_low", "ci_high", "p_value", "verdict",
            "detectable"} <= set(parsed[0])


def test_report_shows_arms_comparisons_and_keeps_the_per_seed_rows(sweep: list[dict[str, Any]]) -> None:
    markdown = render_report(sweep, AXES, sweep="s", where="w", plots=[], resume="r",
                             baseline={"method": "clip"})
    assert "## Arms: mean ± 95% interval over `seed`" in markdown
    assert "| clip | none | 3 | 0.6100 ± 0.0248 (sd 0.0100) |" in markdown
    assert "## Against the baseline `method=clip`" in markdown
    assert "| ito | none | 3 | +0.0467 ±" in markdown and "above" in markdown
    assert "### fashion_mnist (in-distribution" in markdown and "### shapes\n" in markdown
    assert "detect with 80% power" in markdown
    assert "## Grid points" in markdown and "| ito | mlp | 1 | runs/itomlp1 | ok |" in markdown


def test_a_grid_without_the_replicate_axis_says_so(sweep: list[dict[str, Any]]) -> None:
    points = [p for p in sweep if p["overrides"][-1] == "seed=0"]
    for p in points:
        p["overrides"] = p["overrides"][:-1]
    markdown = render_report(points, ["method", "ito.fusion"], sweep="s", where="w", plots=[], resume="r")
    assert "No replicate axis: `report.replicate_axis=seed` is not an axis of this grid" in markdown
    assert "## Arms" not in markdown and "## Metrics per grid point" in markdown


def test_plots_draw_arm_means_with_intervals_and_skip_the_replicate_axis(sweep: list[dict[str, Any]],
                                                                        tmp_path: Path) -> None:
    rows = report_rows(sweep, AXES)
    assert plot_metrics(rows, AXES, tmp_path, ["*/acc1"]) == ["plot-method.png", "plot-ito.fusion.png"]
    lines = _lines(rows, "method", AXES, "fashion_mnist/acc1")
    clip_none = dict(lines["ito.fusion=none"])["clip"]
    assert clip_none.n == 3 and clip_none.half_width == pytest.approx(summarize([0.60, 0.62, 0.61]).half_width)


def test_axis_values_keep_grid_order() -> None:
    points = [["method=ito", "seed=1"], ["method=ito", "seed=0"], ["method=clip", "seed=1"]]
    assert axis_values(points) == {"method": ["ito", "clip"], "seed": ["1", "0"]}
