"""Statistics over a sweep's replicates (``report.replicate_axis``, default ``seed``): which differences are real.

The grid points are grouped into *arms* by their values on every axis but the replicate axis. Per arm and metric:
n, mean, sample std and a two-sided t interval of the mean. Each arm is compared with its *baseline arm* (the same
arm with the ``report.baseline`` axes set to their baseline values, e.g. ``method=clip``), paired by replicate
(seed ``s`` of the arm against seed ``s`` of the baseline, so what a seed shares, such as its data order and
initialisation, cancels): the mean difference, its t interval and a verdict, *above* or *below* when the interval
excludes 0, else *within noise*. With it goes the smallest true difference that a two-sided paired t-test at this n
and this spread detects with ``POWER`` probability, so "within noise" says how large a difference could hide.

Verdicts are per comparison, with no correction for the number of comparisons: with k of them, about
``(1 - confidence) * k`` read above or below by chance alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
POWER = 0.8  # the power at which ``detectable_difference`` is stated
ABOVE, BELOW, NOISE, UNTESTED = "above", "below", "within noise", "n/a (n<2)"


@dataclass(frozen=True)
class Summary:
    """One arm's values of one metric: ``half_width`` is the interval's half width (None with n < 2)."""
    n: int
    mean: float
    std: float | None
    half_width: float | None

    @property
    def interval(self) -> tuple[float, float] | None:
        return None if self.half_width is None else (self.mean - self.half_width, self.mean + self.half_width)


@dataclass(frozen=True)
class Comparison:
    """Arm minus baseline over the replicates both have: mean difference, its interval, verdict, detectable size."""
    n: int
    difference: float
    half_width: float | None
    p_value: float | None
    verdict: str
    detectable: float | None


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half width of the two-sided t interval of a mean of ``n`` values with sample std ``std``."""
    return float(scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)


def summarize(values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return Summary(n, mean, None, None)
    std = statistics.stdev(values)
    return Summary(n, mean, std, t_half_width(std, n, confidence))


def detectable_difference(std_diff: float, n: int, *, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """The smallest true mean difference that a two-sided paired t-test on ``n`` pairs (level ``1 - confidence``)
    rejects with probability ``power``, when the differences' std is ``std_diff``: the noncentral t solved for
    its noncentrality, not the normal approximation, which is far off at n = 3-5."""
    df = n - 1
    critical = scipy_stats.t.ppf(0.5 + confidence / 2, df)

    def power_gap(noncentrality: float) -> float:
        # The far tail (rejecting on the wrong side) is ~0 here, and scipy's nct.cdf returns NaN for it at times.
        wrong_side = float(np.nan_to_num(scipy_stats.nct.cdf(-critical, df, noncentrality)))
        return scipy_stats.nct.sf(critical, df, noncentrality) + wrong_side - power

    high = 4.0  # widened until the power passes ``power``
    while power_gap(high) < 0:
        high *= 2
    noncentrality = optimize.brentq(power_gap, 0.0, high)
    return float(noncentrality * std_diff / math.sqrt(n))


def compare_paired(baseline: dict[str, float], arm: dict[str, float], confidence: float = CONFIDENCE) -> Comparison:
    """``arm`` minus ``baseline``, both keyed by replicate (seed), over the replicates both have."""
    shared = [key for key in arm if key in baseline]
    diffs = [arm[key] - baseline[key] for key in shared]
    if len(diffs) < 2:
        return Comparison(len(diffs), statistics.fmean(diffs) if diffs else math.nan, None, None, UNTESTED, None)
    mean, std, n = statistics.fmean(diffs), statistics.stdev(diffs), len(diffs)
    half = t_half_width(std, n, confidence)
    if std == 0.0:  # every replicate moved by exactly the same amount: no spread to test against
        p_value = 1.0 if mean == 0.0 else 0.0
    else:
        p_value = float(2 * scipy_stats.t.sf(abs(mean) / (std / math.sqrt(n)), n - 1))
    verdict = ABOVE if mean - half > 0 else BELOW if mean + half < 0 else NOISE
    return Comparison(n, mean, half, p_value, verdict, detectable_difference(std, n, confidence=confidence))


def parse_baseline(text: str) -> dict[str, str]:
    """``"method=clip"`` or ``"ito.images=1 ito.fusion=none"`` -> axis -> value."""
    pairs = [part.partition("=") for part in text.split()]
    bad = [key + sep + value for key, sep, value in pairs if not (key and sep and value)]
    if bad:
        raise ValueError(f"report.baseline={text!r}: {bad[0]!r} is not axis=value; write e.g. report.baseline="
                         "method=clip (space-separated axis=value pairs)")
    return {key: value for key, _, value in pairs}


def resolve_baseline(text: str, axes: dict[str, list[str]], replicate_axis: str) -> dict[str, str]:
    """The baseline arm's axis values (``report.baseline``, else the first value of the first non-replicate axis),
    checked against the grid's ``axes`` (axis -> values in grid order)."""
    arm_axes = [axis for axis in axes if axis != replicate_axis]
    if not text:
        return {arm_axes[0]: axes[arm_axes[0]][0]} if arm_axes else {}
    baseline = parse_baseline(text)
    for axis, value in baseline.items():
        if axis not in arm_axes:
            raise ValueError(f"report.baseline={text!r}: {axis!r} is not an axis of this grid; use one of "
                             f"{arm_axes or '(none: the grid varies only ' + replicate_axis + ')'}, or "
                             "report.baseline='' for the first value of the first axis")
        if value not in axes[axis]:
            raise ValueError(f"report.baseline={text!r}: {axis} takes {axes[axis]} in this grid, not {value!r}")
    return baseline


def arm_label(arm: dict[str, str]) -> str:
    return " ".join(f"{axis}={value}" for axis, value in arm.items()) or "(all)"


def group_arms(rows: list[dict[str, Any]], axes: list[str], replicate_axis: str,
               metrics: list[str]) -> list[dict[str, Any]]:
    """The arms of the ok ``rows`` (report rows: axis values + metric columns), in grid order: each with its axis
    values (``arm``), its ``values`` per metric keyed by replicate, and a ``Summary`` per metric."""
    arm_axes = [axis for axis in axes if axis != replicate_axis]
    arms: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        arm = arms.setdefault(tuple(row[a] for a in arm_axes),
                              {"arm": {a: row[a] for a in arm_axes}, "values": {m: {} for m in metrics}})
        for metric in metrics:
            if isinstance(row.get(metric), int | float):
                arm["values"][metric][str(row.get(replicate_axis, len(arm["values"][metric])))] = float(row[metric])
    for arm in arms.values():
        arm["summary"] = {m: summarize(list(v.values())) for m, v in arm["values"].items() if v}
    return list(arms.values())


def compare_arms(arms: list[dict[str, Any]], baseline: dict[str, str]) -> list[dict[str, Any]]:
    """Each arm that is not a baseline against its baseline arm, per metric: ``{"arm", "baseline", "metrics":
    {metric: Comparison}}``. An arm whose baseline arm has no ok point gets no entry."""
    by_values = {tuple(arm["arm"].items()): arm for arm in arms}
    out = []
    for arm in arms:
        base_values = {**arm["arm"], **baseline}
        base = by_values.get(tuple(base_values.items()))
        if base is None or base is arm:
            continue
        metrics = {m: compare_paired(base["values"][m], values) for m, values in arm["values"].items()
                   if values and base["values"].get(m)}
        out.append({"arm": arm["arm"], "baseline": base["arm"], "metrics": metrics})
    return out
