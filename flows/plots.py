"""PNG plots of the sweep's main metrics against each grid axis: one figure per axis, one panel per
metric (``report.plot_metrics`` patterns over the report's columns, e.g. ``*/acc1``), laid out
``COLUMNS`` panels a row, one line per setting of the other axes (e.g. zero-shot accuracy vs M, one
line per fusion kind), the legend below the panels.

Uses matplotlib's object API (``Figure``, Agg canvas), no pyplot: no global state, safe in threads.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from flows.report import select

COLUMNS = 3  # panels per row


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _ordered(values: set[str]) -> list[str]:
    """Numeric axis values in numeric order, anything else alphabetically."""
    if all(_number(v) is not None for v in values):
        return sorted(values, key=float)
    return sorted(values)


def _lines(rows: list[dict[str, Any]], axis: str, axes: list[str], metric: str) -> dict[str, list[tuple[str, float]]]:
    """label (the other axes' values) -> [(x, y)] over the rows that succeeded."""
    lines: dict[str, list[tuple[str, float]]] = {}
    for row in rows:
        y = _number(row.get(metric))
        if row["status"] == "ok" and y is not None:
            label = " ".join(f"{a}={row[a]}" for a in axes if a != axis) or "all"
            lines.setdefault(label, []).append((row[axis], y))
    return lines


def plotted(rows: list[dict[str, Any]], patterns: list[str]) -> list[str]:
    """The columns matching ``patterns`` that some ok point has a number for."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return [m for m in select(columns, patterns)
            if any(r["status"] == "ok" and _number(r.get(m)) is not None for r in rows)]


def plot_axis(rows: list[dict[str, Any]], axis: str, axes: list[str], path: Path, metrics: list[str]) -> bool:
    """One PNG for ``axis``, a panel per metric; False (nothing written) when there is no metric."""
    if not metrics:
        return False
    xs = _ordered({row[axis] for row in rows})
    from matplotlib.figure import Figure  # here: ~0.35 s CPU, needed only once a sweep has metrics to plot

    ncols = min(COLUMNS, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows + 0.6), layout="constrained")
    panels = fig.subplots(nrows, ncols, squeeze=False).flatten()
    for panel, metric in zip(panels, metrics, strict=False):
        for label, points in _lines(rows, axis, axes, metric).items():
            points.sort(key=lambda p: xs.index(p[0]))
            panel.plot([xs.index(x) for x, _ in points], [y for _, y in points], marker="o", label=label)
        panel.set(title=metric, xlabel=axis, xticks=range(len(xs)), xticklabels=xs)
        panel.grid(alpha=0.3)
    for panel in panels[len(metrics):]:
        panel.set_visible(False)  # the last row's empty slots
    handles, labels = panels[0].get_legend_handles_labels()
    if len(handles) > 1:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(handles)), fontsize="small")
    fig.savefig(path, dpi=100)
    return True


def plot_metrics(rows: list[dict[str, Any]], axes: list[str], out_dir: Path, patterns: list[str]) -> list[str]:
    """``plot-<axis>.png`` in ``out_dir`` for every grid axis, of the columns ``patterns`` (``report.plot_metrics``)
    select; returns the file names written."""
    names, metrics = [], plotted(rows, patterns)
    for axis in axes:
        name = f"plot-{re.sub(r'[^A-Za-z0-9_.-]+', '_', axis)}.png"
        if plot_axis(rows, axis, axes, out_dir / name, metrics):
            names.append(name)
    return names
