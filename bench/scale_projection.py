"""Project the measured costs of live sweeps (records of ``bench/scale_sweep.py``) to a team-scale sweep: Prefect
requests/s, database growth, scheduler calls/s, the flow process's CPU, memory and threads.

Per-point costs (flow CPU, Prefect requests, database MB, log rows, S3 requests) are the slope of a line fitted
through the records against their number of points; the flow's peak RSS and threads, a line against the points in
flight at once (``min(points, max_concurrent_train)``), from the records whose sampler saw one flow process only
(the peaks sum every Python process under ``ito-sweep serve``). Scheduler calls come from the largest record alone: with
one shared watcher per flow they do not depend on the number of points. A real point trains for hours, not the
records' seconds, so rates are per-point totals spread over ``--point-hours``, plus one progress log row per
``progress_every_s`` per training.

    python bench/scale_projection.py docs/benchmarks/scale_sweep_{8pt,16pt,128pt}_16nodes*.json \
        --points 1000 --nodes 64 --gpus-per-node 8 --point-hours 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np


def in_flight(record: dict[str, Any]) -> int:
    return min(record["params"]["points"], record["params"]["max_concurrent_train"])


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line; a single distinct x gives slope 0 and the mean."""
    if len(set(xs)) < 2:
        return 0.0, float(np.mean(ys))
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(slope), float(intercept)


def per_point(records: list[dict[str, Any]]) -> dict[str, float]:
    points = [r["params"]["points"] for r in records]
    measures = {
        "flow CPU s": [r["flow_process"]["cpu_s_per_point"] * r["params"]["points"] for r in records],
        "Prefect requests": [r["prefect"]["total"] for r in records],
        "database MB": [r["database"]["size_mb"] for r in records],
        "log rows": [r["database"]["log_rows_this_run"] for r in records],
        "S3 requests": [r["s3"]["total"] for r in records],
    }
    return {name: fit(points, values)[0] for name, values in measures.items()}


def projection(records: list[dict[str, Any]], *, points: int, concurrent: int, point_hours: float) -> dict[str, Any]:
    largest = max(records, key=lambda r: r["params"]["points"])
    cost = per_point(records)
    alone = [r for r in records if r["flow_process"]["flow_processes"] == 1]
    rss = fit([in_flight(r) for r in alone], [r["flow_process"]["flow_peak_rss_mb"] for r in alone])
    threads = fit([in_flight(r) for r in alone], [r["flow_process"]["flow_peak_threads"] for r in alone])
    progress_rows = point_hours * 3600 / largest["params"]["progress_every_s"]
    point_s = point_hours * 3600
    return {
        "points in flight": concurrent,
        "Prefect requests/s": concurrent * cost["Prefect requests"] / point_s,
        "log rows/s": concurrent * (cost["log rows"] + progress_rows) / point_s,
        "database growth MB (whole sweep, the records' log rows)": points * cost["database MB"],
        "log rows (whole sweep, with progress)": points * (cost["log rows"] + progress_rows),
        "scheduler client calls/s": largest["slurm_client_calls"]["per_min"] / 60,
        "slurmctld RPCs/s": largest["slurmctld_rpcs"]["per_min"] / 60,
        "flow CPU (cores busy)": concurrent * cost["flow CPU s"] / point_s,
        "flow peak RSS GB": (rss[1] + rss[0] * concurrent) / 1024,
        "flow peak threads": threads[1] + threads[0] * concurrent,
        "S3 requests/s (orchestration, no checkpoints)": concurrent * cost["S3 requests"] / point_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--gpus-per-point", type=int, nargs="+", default=[8, 1],
                        help="one projected column per value: GPUs each training uses")
    parser.add_argument("--point-hours", type=float, default=2.0, help="how long one point's stages take")
    args = parser.parse_args()
    records = [json.loads(path.read_text()) for path in args.records]
    columns = {g: projection(records, points=args.points, point_hours=args.point_hours,
                             concurrent=min(args.points, args.nodes * args.gpus_per_node // g))
               for g in args.gpus_per_point}
    print("per point (fitted slope): " + ", ".join(f"{k} {v:.3g}" for k, v in per_point(records).items()))
    print(f"| {args.points} points, {args.nodes} nodes x {args.gpus_per_node} GPUs, {args.point_hours} h a point | "
          + " | ".join(f"{g} GPU{'s' * (g > 1)} a point" for g in columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for name in next(iter(columns.values())):
        print(f"| {name} | " + " | ".join(f"{col[name]:,.3g}" for col in columns.values()) + " |")


if __name__ == "__main__":
    main()
