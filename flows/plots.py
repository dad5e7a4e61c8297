"""PNG plots of the sweep's main metrics against each grid axis: one figure per axis, one panel per
metric (``report.plot_metrics`` patterns over the report's columns, e.g. ``*/acc1``), laid out
``COLUMNS`` panels a row, one line per setting of the other axes (e.g. zero-shot accuracy vs M, one
line per fusion kind), the legend below the panels.

Each point drawn is an arm's mean over the replicate axis (``report.replicate_axis``) with its interval as an error
bar; the replicate axis gets no figure of its own. The panel title says n, "n=1" when there is no replicate: a
panel zooms to its data, so a difference that fills it may be noise.

Uses matplotlib's object API (``Figure``, Agg canvas), no pyplot: no global state, safe in threads.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from flows.replicates import CONFIDENCE, Summary, group_arms
from flows.report import select

COLUMNS = 3  # panels per row


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ordered(values: list[str]) -> list[str]:
    """Numeric axis values in numeric order, anything else in grid order (the baseline arm first)."""
    if all(_number(v) is not None for v in values):
        return sorted(values, key=float)
    return list(values)


def _lines(rows: list[dict[str, Any]], axis: str, axes: list[str], metric: str, replicate_axis: str = "seed"
           ) -> dict[str, list[tuple[str, Summary]]]:
    """label (the other arm axes' values) -> [(x, the arm's summary)] over the rows that succeeded."""
    numeric = [{**row, metric: _number(row.get(metric))} for row in rows if _number(row.get(metric)) is not None]
    lines: dict[str, list[tuple[str, Summary]]] = {}
    for arm in group_arms(numeric, axes, replicate_axis, [metric]):
        label = " ".join(f"{a}={v}" for a, v in arm["arm"].items() if a != axis) or "all"
        lines.setdefault(label, []).append((arm["arm"][axis], arm["summary"][metric]))
    return lines


def _title(metric: str, lines: dict[str, list[tuple[str, Summary]]]) -> str:
    counts = sorted({summary.n for points in lines.values() for _, summary in points})
    if counts == [1]:
        return f"{metric} (n=1: no replicates)"
    level = f"{CONFIDENCE:.0%}"
    return f"{metric} (mean ± {level} CI, n={'/'.join(map(str, counts))})"


def plotted(rows: list[dict[str, Any]], patterns: list[str]) -> list[str]:
    """The columns matching ``patterns`` that some ok point has a number for."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [m for m in select(columns, patterns)
            if any(r["status"] == "ok" and _number(r.get(m)) is not None for r in rows)]


def plot_axis(rows: list[dict[str, Any]], axis: str, axes: list[str], path: Path, metrics: list[str],
              replicate_axis: str = "seed") -> bool:
    """One PNG for ``axis``, a panel per metric; False (nothing written) when there is no metric."""
    if not metrics:
        return False
    xs = _ordered(list(dict.fromkeys(row[axis] for row in rows)))
    from matplotlib.figure import Figure  # here: ~0.35 s CPU, needed only once a sweep has metrics to plot

    ncols = min(COLUMNS, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.6), layout="constrained")
    panels = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for panel, metric in zip(panels, metrics, strict=False):
        lines = _lines(rows, axis, axes, metric, replicate_axis)
        for label, points in lines.items():
            points.sort(key=lambda p: xs.index(p[0]))
            errors = [s.half_width or 0.0 for _, s in points]
            panel.errorbar([xs.index(x) for x, _ in points], [s.mean for _, s in points], yerr=errors, marker="o",
                           capsize=3, label=label)
        panel.set(xlabel=axis, xticks=range(len(xs)))
        long = sum(map(len, xs)) > 24  # names that would overlap side by side
        panel.set_xticklabels(xs, rotation=30 if long else 0, ha="right" if long else "center")
        panel.set_title(_title(metric, lines), fontsize="medium")
        panel.grid(alpha=0.3)
    for panel in panels[len(metrics):]:
        panel.set_visible(False)  # the last row's empty slots
    handles, labels = panels[0].get_legend_handles_labels()
    if len(handles) > 1:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize="small")
    fig.savefig(path, dpi=100)
    return True


def plot_metrics(rows: list[dict[str, Any]], axes: list[str], out_dir: Path, patterns: list[str], *,
                 replicate_axis: str = "seed") -> list[str]:
    """``plot-<axis>.png`` in ``out_dir`` for every grid axis but the replicate axis, of the columns ``patterns``
    (``report.plot_metrics``) select; returns the file names written."""
    names, metrics = [], plotted(rows, patterns)
    for axis in [a for a in axes if a != replicate_axis]:
        name = f"plot-{re.sub(r'[^A-Za-z0-9_.-]+', '_', axis)}.png"
        if plot_axis(rows, axis, axes, out_dir / name, metrics, replicate_axis):
            names.append(name)
    return names
