"""The sweep report: one row per grid point (its varying overrides + eval metrics + status)."""

from __future__ import annotations

import csv
import io
from typing import Any

REPORT_METRICS = ("fashion_mnist/acc1", "fashion_mnist/mean_per_class_recall", "shapes/image_retrieval_recall@1",
                  "shapes/text_retrieval_recall@1", "shapes/image_retrieval_recall@5")


def report_rows(results: list[dict[str, Any]], axes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for result in results:
        overrides = dict(o.split("=", 1) for o in result["overrides"])
        row: dict[str, Any] = {axis: overrides.get(axis, "") for axis in axes}
        row["run"] = result["run_key"]
        row["status"] = result["status"]
        metrics = result.get("metrics", {})
        row.update({name: metrics.get(name, "") for name in REPORT_METRICS if name in metrics or not metrics})
        row["final_loss"] = result.get("final_loss", "")
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
