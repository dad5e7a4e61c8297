"""The sweep report: one row per grid point (its varying overrides + eval metrics + status), the
failed points with their error and how to resume, as markdown and CSV.

A point's result (built by ``flows.sweep``) is a dict: ``overrides``, ``run_key``, ``status``
(``ok`` | ``failed``), and ``metrics`` + the last logged losses when ok, ``stage`` + ``error`` when failed.
Metric columns come from the eval records (``<eval set>/<metric>``), whichever sets the sweep evaluated on,
chosen by ``report.metrics`` patterns. The markdown splits them into one table per eval set, at most
``TABLE_METRICS`` metrics wide, so it reads on a laptop screen (and in the Prefect UI); the CSV has them all.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import re
import statistics
from typing import Any

from ito_core.eval.names import LOSS_COLUMNS

TABLE_METRICS = 6  # metric columns per markdown table
ERROR_TAIL_LINES = 15


def point_label(overrides: list[str], axes: list[str]) -> str:
    """``ito.images=2 ito.fusion=none``: a point named by its values on the grid axes."""
    values = dict(o.split("=", 1) for o in overrides)
    return " ".join(f"{axis}={values[axis]}" for axis in axes if axis in values) or "(single point)"


def select(names: list[str], patterns: list[str]) -> list[str]:
    """``names`` matching any of ``patterns`` (fnmatch: ``*/acc1``), in pattern order; all when no patterns."""
    if not patterns:
        return list(names)
    return list(dict.fromkeys(n for pattern in patterns for n in names if fnmatch.fnmatchcase(n, pattern)))


def _natural(name: str) -> list[Any]:
    """``recall@5`` before ``recall@10``; case-insensitive."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def metric_names(results: list[dict[str, Any]], patterns: list[str] = ()) -> list[str]:
    """The eval metrics the points hold, filtered by ``patterns`` (``report.metrics``): eval sets in record order,
    each set's metrics in natural order (the same for fresh records and ones read back from the store)."""
    present = list(dict.fromkeys(name for result in results for name in result.get("metrics", {})))
    sets = list(dict.fromkeys(name.split("/", 1)[0] for name in present))
    ordered = sorted(present, key=lambda name: (sets.index(name.split("/", 1)[0]), _natural(name)))
    return select(ordered, list(patterns))


def row_axes(results: list[dict[str, Any]], axes: list[str]) -> list[str]:
    """The report's key columns: the grid axes, or for a grid without any (one point) that point's overrides."""
    if axes or not results:
        return axes
    return list(dict.fromkeys(o.split("=", 1)[0] for o in results[0]["overrides"]))


def report_rows(results: list[dict[str, Any]], axes: list[str], metrics: list[str] = ()) -> list[dict[str, Any]]:
    """One row per point: its axis values, run key, status, the chosen eval metrics and the final losses."""
    names, axes = metric_names(results, metrics), row_axes(results, axes)
    rows = []
    for result in results:
        overrides = dict(o.split("=", 1) for o in result["overrides"])
        row: dict[str, Any] = {axis: overrides.get(axis, "") for axis in axes}
        row["run"] = result["run_key"]
        row["status"] = "ok" if result["status"] == "ok" else f"failed ({result.get('stage', '?')})"
        values = result.get("metrics", {})
        row.update({name: values.get(name, "") for name in names})
        row.update({name: result.get(name, "") for name in LOSS_COLUMNS})
        rows.append(row)
    return rows


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(key for row in rows for key in row))


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def failures_section(results: list[dict[str, Any]], axes: list[str], resume: str) -> str:
    """Each failed point: its values, the stage that failed, the tail of the error (job log included)."""
    failed = [r for r in results if r["status"] != "ok"]
    if not failed:
        return ""
    parts = [f"## Failed grid points ({len(failed)} of {len(results)})\n"]
    for result in failed:
        tail = "\n".join(str(result.get("error", "")).splitlines()[-ERROR_TAIL_LINES:]).replace("```", "'''")
        parts.append(f"### {point_label(result['overrides'], axes)}: {result.get('stage', '?')} failed\n\n"
                     f"Run `{result['run_key']}`.\n\n```text\n{tail}\n```\n")
    parts.append(f"**How to resume:** {resume}\n")
    return "\n".join(parts)


def seed_summary(rows: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    """Mean ± sample std over seeds of every ok row's metrics and losses, one row per setting of the other axes."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(tuple(row[a] for a in axes if a != "seed"), []).append(row)
    summary = []
    for key, members in groups.items():
        out: dict[str, Any] = dict(zip([a for a in axes if a != "seed"], key, strict=True))
        out["seeds"] = len(members)
        for metric in [c for c in _columns(members) if c not in (*axes, "run", "status")]:
            values = [float(m[metric]) for m in members if m.get(metric, "") != ""]
            if values:
                mean = statistics.fmean(values)
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                out[metric] = f"{mean:.4f} ± {spread:.4f}"
        summary.append(out)
    return summary


def metric_tables(rows: list[dict[str, Any]], keys: list[str], names: list[str]) -> str:
    """One markdown table per eval set (``<set>/<metric>``, set in the heading, metric in the column), at most
    ``TABLE_METRICS`` metrics wide, each keyed by ``keys`` (the axes)."""
    by_set: dict[str, list[str]] = {}
    for name in names:
        by_set.setdefault(name.split("/", 1)[0] if "/" in name else "", []).append(name)
    parts = []
    for eval_set, members in by_set.items():
        for start in range(0, len(members), TABLE_METRICS):
            chunk = members[start:start + TABLE_METRICS]
            table = [{**{k: row.get(k, "") for k in keys}, **{n.split("/", 1)[-1]: row.get(n, "") for n in chunk}}
                     for row in rows]
            parts.append(f"### {eval_set or 'other'}\n\n{to_markdown(table)}")
    return "\n".join(parts)


def render_report(results: list[dict[str, Any]], axes: list[str], *, sweep: str, where: str, plots: list[str],
                  resume: str, metrics: list[str] = ()) -> str:
    """The whole report.md: the points (status, losses), then the metrics of each eval set (means ± std over
    seeds when ``seed`` is an axis), the plot files, the failed points."""
    ok = sum(r["status"] == "ok" for r in results)
    rows, keys, names = report_rows(results, axes, metrics), row_axes(results, axes), metric_names(results, metrics)
    head = f"# Sweep {sweep}\n\n{ok}/{len(results)} grid points ok; files in `{where}`.\n\n"
    points = to_markdown([{k: row[k] for k in (*keys, "run", "status", *LOSS_COLUMNS)} for row in rows])
    if "seed" in axes:
        others = [a for a in keys if a != "seed"]
        body = (f"## Grid points\n\n{points}\n## Metrics, mean ± std over seeds\n\n"
                + metric_tables(seed_summary(rows, axes), [*others, "seeds"], names))
    else:
        body = f"## Grid points\n\n{points}" + (f"\n## Metrics\n\n{metric_tables(rows, keys, names)}" if names else "")
    plot_list = "".join(f"- `{name}`\n" for name in plots)
    body += f"\nPlots of the metrics against each axis:\n\n{plot_list}" if plots else ""
    failures = failures_section(results, axes, resume)
    return head + body + (f"\n{failures}" if failures else "")
