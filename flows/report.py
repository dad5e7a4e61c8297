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
from typing import Any

from flows.replicates import CONFIDENCE, POWER, arm_label, compare_arms, group_arms
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


def in_distribution_sets(results: list[dict[str, Any]]) -> set[str]:
    """Eval sets whose images or class names the training data holds (the points' ``in_distribution``)."""
    return {name for result in results for name in result.get("in_distribution", [])}


def set_heading(eval_set: str, in_distribution: set[str]) -> str:
    if eval_set in in_distribution:
        return f"{eval_set} (in-distribution: the training data holds this set's images or class names)"
    return eval_set or "other"


def metric_tables(rows: list[dict[str, Any]], keys: list[str], names: list[str],
                  in_distribution: set[str] = frozenset(), cell: Any = None) -> str:
    """One markdown table per eval set (``<set>/<metric>``, set in the heading, metric in the column), at most
    ``TABLE_METRICS`` metrics wide, each keyed by ``keys`` (the axes); ``cell(row, metric)`` formats a value
    (default: the row's value)."""
    cell = cell or (lambda row, name: row.get(name, ""))
    by_set: dict[str, list[str]] = {}
    for name in names:
        by_set.setdefault(name.split("/", 1)[0] if "/" in name else "", []).append(name)
    parts = []
    for eval_set, members in by_set.items():
        for start in range(0, len(members), TABLE_METRICS):
            chunk, more = members[start:start + TABLE_METRICS], " (continued)" if start else ""
            table = [{**{k: row.get(k, "") for k in keys}, **{n.split("/", 1)[-1]: cell(row, n) for n in chunk}}
                     for row in rows]
            parts.append(f"### {set_heading(eval_set, in_distribution)}{more}\n\n{to_markdown(table)}")
    return "\n".join(parts)


def sweep_statistics(rows: list[dict[str, Any]], axes: list[str], names: list[str], *, replicate_axis: str,
                     baseline: dict[str, str]) -> dict[str, Any]:
    """The arms' summaries and their paired comparisons with the baseline, one flat record per (arm, metric): what
    ``arms.csv``, ``comparisons.csv``, ``results.json`` and the markdown show."""
    arms = group_arms(rows, axes, replicate_axis, names)
    summaries = [{**arm["arm"], "metric": metric, "n": s.n, "mean": s.mean, "std": _blank(s.std),
                  "ci_low": _blank(s.interval and s.interval[0]), "ci_high": _blank(s.interval and s.interval[1])}
                 for arm in arms for metric, s in arm["summary"].items()]
    comparisons = [{**entry["arm"], "baseline": arm_label(entry["baseline"]), "metric": metric, "n": c.n,
                    "difference": c.difference, "ci_low": _blank(c.half_width and c.difference - c.half_width),
                    "ci_high": _blank(c.half_width and c.difference + c.half_width), "p_value": _blank(c.p_value),
                    "verdict": c.verdict, "detectable": _blank(c.detectable)}
                   for entry in compare_arms(arms, baseline) for metric, c in entry["metrics"].items()]
    return {"replicate_axis": replicate_axis, "confidence": CONFIDENCE, "power": POWER, "baseline": baseline,
            "arm_axes": [a for a in axes if a != replicate_axis], "arms": summaries, "comparisons": comparisons}


def _blank(value: float | None) -> float | str:
    """None (no interval at n < 2) as an empty CSV cell."""
    return "" if value is None else value


def _pivot(records: list[dict[str, Any]], keys: list[str], count: str) -> list[dict[str, Any]]:
    """Flat (arm, metric) records -> one row per arm: its ``keys``, ``count`` (the largest n) and metric -> record."""
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for record in records:
        row = rows.setdefault(tuple(record[k] for k in keys), {**{k: record[k] for k in keys}, count: 0})
        row[record["metric"]], row[count] = record, max(row[count], record["n"])
    return list(rows.values())


def _mean_cell(row: dict[str, Any], name: str) -> str:
    record = row.get(name)
    if not record:
        return ""
    if record["ci_low"] == "":
        return f"{record['mean']:.4f} (n=1)"
    return f"{record['mean']:.4f} ± {record['mean'] - record['ci_low']:.4f} (sd {record['std']:.4f})"


def _difference_cell(row: dict[str, Any], name: str) -> str:
    record = row.get(name)
    if not record:
        return ""
    if record["ci_low"] == "":
        return f"{record['difference']:+.4f} {record['verdict']}"
    return f"{record['difference']:+.4f} ± {record['difference'] - record['ci_low']:.4f} {record['verdict']}"


def detectable_table(comparisons: list[dict[str, Any]], names: list[str]) -> str:
    """Per metric: the pairs and the smallest difference the comparisons can detect (range over the arms)."""
    rows = []
    for name in names:
        sizes = [c["detectable"] for c in comparisons if c["metric"] == name and c["detectable"] != ""]
        if sizes:
            pairs = sorted({c["n"] for c in comparisons if c["metric"] == name})
            spread = f"{min(sizes):.4f}" if len(sizes) == 1 else f"{min(sizes):.4f} – {max(sizes):.4f}"
            rows.append({"metric": name, "pairs": "/".join(map(str, pairs)), "detectable difference": spread})
    return to_markdown(rows) if rows else ""


def statistics_section(stats: dict[str, Any], names: list[str], in_distribution: set[str]) -> str:
    """The arms (mean ± interval) and their comparisons with the baseline, as markdown."""
    keys, replicate, level = stats["arm_axes"], stats["replicate_axis"], f"{stats['confidence']:.0%}"
    arms = metric_tables(_pivot(stats["arms"], keys, "n"), [*keys, "n"], names, in_distribution, _mean_cell)
    text = (f"## Arms: mean ± {level} interval over `{replicate}`\n\nAn arm is the points that differ only in "
            f"`{replicate}`. Cell: mean ± half width of the {level} t interval (sd: sample std); n: points with "
            f"results.\n\n{arms}")
    comparisons = stats["comparisons"]
    if not comparisons:
        return text + "\nNo arm has a baseline arm to compare with (`report.baseline`).\n\n"
    base = arm_label(stats["baseline"])
    table = metric_tables(_pivot(comparisons, keys, "pairs"), [*keys, "pairs"], names, in_distribution,
                          _difference_cell)
    text += (f"\n## Against the baseline `{base}`\n\nEach arm minus its baseline arm (the same settings but `{base}`), "
             f"paired by `{replicate}`. Cell: mean difference ± half width of its {level} t interval, then the "
             f"verdict: above or below when the interval excludes 0, else within noise. {len(comparisons)} "
             f"comparisons, not corrected for their number: about {1 - stats['confidence']:.2f} x "
             f"{len(comparisons)} = {(1 - stats['confidence']) * len(comparisons):.1f} of them read above or "
             f"below by chance alone.\n\n{table}")
    detectable = detectable_table(comparisons, names)
    if detectable:
        text += (f"\nThe smallest true difference these pairs detect with {stats['power']:.0%} power (paired t-test, "
                 f"two-sided {1 - stats['confidence']:.0%}; range over the arms). A difference within noise may be "
                 f"this large:\n\n{detectable}")
    return text + "\n"


def render_report(results: list[dict[str, Any]], axes: list[str], *, sweep: str, where: str, plots: list[str],
                  resume: str, metrics: list[str] = (), replicate_axis: str = "seed",
                  baseline: dict[str, str] | None = None, stats: dict[str, Any] | None = None,
                  logs: str = "") -> str:
    """The whole report.md: with a replicate axis, the arms (mean ± interval) and their comparison with the baseline
    (``statistics_section`` of ``stats``, the ``sweep_statistics`` the caller already has, else computed here);
    then the points (status, losses), the metrics of each point, the plot files, the failed points. ``logs``: where
    each point's full job logs are, with ``<run>`` standing for the run column."""
    ok = sum(r["status"] == "ok" for r in results)
    rows, keys, names = report_rows(results, axes, metrics), row_axes(results, axes), metric_names(results, metrics)
    head = f"# Sweep {sweep}\n\n{ok}/{len(results)} grid points ok; files in `{where}`.\n\n"
    marks = in_distribution_sets(results)
    if replicate_axis in axes:
        stats = stats or sweep_statistics(rows, axes, names, replicate_axis=replicate_axis, baseline=baseline or {})
        head += statistics_section(stats, names, marks)
    elif axes:
        head += (f"No replicate axis: `report.replicate_axis={replicate_axis}` is not an axis of this grid, so each "
                 "point is one run (n=1) and no difference below can be told from noise. Add e.g. "
                 f"`{replicate_axis}=0,1,2,3,4` to the grid for intervals and comparisons.\n\n")
    points = to_markdown([{k: row[k] for k in (*keys, "run", "status", *LOSS_COLUMNS)} for row in rows])
    points += (f"\nEach point's full job logs (every rank's stdout and stderr, by stage): `{logs}`; Prefect's log "
               "holds their warnings, errors and sampled progress.\n") if logs else ""
    body = f"## Grid points\n\n{points}" + (
        f"\n## Metrics per grid point\n\n{metric_tables(rows, keys, names, marks)}" if names else "")
    plot_list = "".join(f"- `{name}`\n" for name in plots)
    body += f"\nPlots of the metrics against each axis:\n\n{plot_list}" if plots else ""
    failures = failures_section(results, axes, resume)
    return head + body + (f"\n{failures}" if failures else "")
