"""The sweep report: one row per grid point (its varying overrides + eval metrics + status), the
failed points with their error and how to resume, as markdown and CSV.

A point's result (built by ``flows.sweep``) is a dict: ``overrides``, ``run_key``, ``status``
(``ok`` | ``failed``), and ``metrics`` + the last logged losses when ok, ``stage`` + ``error`` when failed.
"""

from __future__ import annotations

import csv
import io
import statistics
from typing import Any

REPORT_METRICS = ("fashion_mnist/acc1", "fashion_mnist/mean_per_class_recall", "fashion_mnist/lp_acc1",
                  "shapes/image_retrieval_recall@1", "shapes/text_retrieval_recall@1",
                  "shapes/image_retrieval_recall@5", "shapes/centroid_distance", "shapes/matched_pair_cosine",
                  "shapes/random_pair_cosine")
# The last logged training losses: the total (align + lambda x fusion) and the alignment part alone, the one that
# compares across fusion settings.
LOSS_COLUMNS = ("final_loss", "final_align_loss")
ERROR_TAIL_LINES = 15


def point_label(overrides: list[str], axes: list[str]) -> str:
    """``ito.images=2 ito.fusion=none``: a point named by its values on the grid axes."""
    values = dict(o.split("=", 1) for o in overrides)
    return " ".join(f"{axis}={values[axis]}" for axis in axes if axis in values) or "(single point)"


def report_rows(results: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    present = {name for result in results for name in result.get("metrics", {})}
    rows = []
    for result in results:
        overrides = dict(o.split("=", 1) for o in result["overrides"])
        row: dict[str, Any] = {axis: overrides.get(axis, "") for axis in axes}
        row["run"] = result["run_key"]
        row["status"] = "ok" if result["status"] == "ok" else f"failed ({result.get('stage', '?')})"
        metrics = result.get("metrics", {})
        row.update({name: metrics.get(name, "") for name in REPORT_METRICS if name in present})
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
    """Mean ± sample std over seeds of every ok row, one row per setting of the other axes."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(tuple(row[a] for a in axes if a != "seed"), []).append(row)
    summary = []
    for key, members in groups.items():
        out: dict[str, Any] = dict(zip([a for a in axes if a != "seed"], key, strict=True))
        out["seeds"] = len(members)
        for metric in (*REPORT_METRICS, *LOSS_COLUMNS):
            values = [float(m[metric]) for m in members if m.get(metric, "") != ""]
            if values:
                mean = statistics.fmean(values)
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                out[metric] = f"{mean:.4f} ± {spread:.4f}"
        summary.append(out)
    return summary


def render_report(results: list[dict[str, Any]], axes: list[str], *, sweep: str, where: str, plots: list[str],
                  resume: str) -> str:
    """The whole report.md: table, plot files, failed points."""
    ok = sum(r["status"] == "ok" for r in results)
    head = f"# Sweep {sweep}\n\n{ok}/{len(results)} grid points ok; files in `{where}`.\n\n"
    plot_list = "".join(f"- `{name}`\n" for name in plots)
    body = to_markdown(report_rows(results, axes)) + (f"\nPlots of the metrics against each axis:\n\n{plot_list}"
                                                      if plots else "")
    if "seed" in axes:
        summary = to_markdown(seed_summary(report_rows(results, axes), axes))
        body = f"Mean ± std over seeds:\n\n{summary}\nEvery grid point:\n\n{body}"
    failures = failures_section(results, axes, resume)
    return head + body + (f"\n{failures}" if failures else "")
