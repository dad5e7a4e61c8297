"""PNG plots of the sweep's main metrics against each grid axis: one figure per axis, one panel per
metric, one line per setting of the other axes (e.g. zero-shot accuracy vs M, one line per fusion kind).

Uses matplotlib's object API (``Figure``, Agg canvas), no pyplot: no global state, safe in threads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PLOT_METRICS = ("fashion_mnist/acc1", "fashion_mnist/lp_acc1", "shapes/image_retrieval_recall@1",
                "shapes/text_retrieval_recall@1", "shapes/centroid_distance", "final_loss")


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


def plot_axis(rows: list[dict[str, Any]], axis: str, axes: list[str], path: Path) -> bool:
    """One PNG for ``axis``; False (nothing written) when no point has a metric to plot."""
    metrics = [m for m in PLOT_METRICS if any(r["status"] == "ok" and _number(r.get(m)) is not None for r in rows)]
    if not metrics:
        return False
    xs = _ordered({row[axis] for row in rows})
    from matplotlib.figure import Figure  # here: ~0.35 s CPU, needed only once a sweep has metrics to plot

    fig = Figure(figsize=(4.2 * len(metrics), 3.4), layout="constrained")
    for panel, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics, strict=True):
        for label, points in _lines(rows, axis, axes, metric).items():
            points.sort(key=lambda p: xs.index(p[0]))
            panel.plot([xs.index(x) for x, _ in points], [y for _, y in points], marker="o", label=label)
        panel.set(title=metric, xlabel=axis, xticks=range(len(xs)), xticklabels=xs)
        panel.grid(alpha=0.3)
    if len(fig.axes[0].get_lines()) > 1:
        fig.axes[0].legend(fontsize="small")
    fig.savefig(path, dpi=100)
    return True


def plot_metrics(rows: list[dict[str, Any]], axes: list[str], out_dir: Path) -> list[str]:
    """``plot-<axis>.png`` in ``out_dir`` for every grid axis; returns the file names written."""
    names = []
    for axis in axes:
        name = f"plot-{re.sub(r'[^A-Za-z0-9_.-]+', '_', axis)}.png"
        if plot_axis(rows, axis, axes, out_dir / name):
            names.append(name)
    return names
