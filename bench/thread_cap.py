"""Concurrent local trainings with and without the per-job thread cap (``cluster.torch_threads``).

Each trial is one ``ito-sweep run`` of ``--runs`` CLIP points (seeds) trained at once on ``cluster=local`` (each job a
process of its own), in a fresh storage root: capped is the default (``cluster.torch_threads=0``: the job's
``cluster.cpus_per_task`` less its DataLoader workers, at least one thread), uncapped sets ``cluster.torch_threads`` to
the machine's core count, which is torch's own default. Trials alternate (capped, uncapped, capped, ...) so that a
neighbour's load hurts both alike. The figure is each run's training samples/s over its logged steps after the first
log interval (engine start-up excluded), from the train manifest's history.

    python bench/thread_cap.py --runs 4 --steps 60 --trials 2 --json /tmp/thread_cap.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import describe, machine  # noqa: E402

from ito_core.artifacts import RUNS, RunLayout  # noqa: E402
from ito_core.storage import MANIFEST  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def trial(threads: int, args: argparse.Namespace) -> list[float]:
    """One sweep of ``args.runs`` concurrent runs; each run's samples/s after its first log interval."""
    with tempfile.TemporaryDirectory() as tmp:
        overrides = ["method=clip", f"seed=range({args.runs})", f"train.steps={args.steps}", "train.warmup_steps=0",
                     "train.log_every=10", "wandb=disabled", "eval.umap_points=0", "eval.max_samples=200",
                     "data.max_train_samples=2000", f"cluster.torch_threads={threads}",
                     f"storage.root={tmp}/store", f"cluster.work_dir={tmp}/work"]
        subprocess.run([sys.executable, "-m", "flows.cli", "run", *overrides, "--max-concurrent-train",
                        str(args.runs)], cwd=ROOT, check=True, capture_output=True)
        rates = []
        store = Path(tmp, "store")
        for run in (store / RUNS).iterdir():
            history = json.loads((store / RunLayout.named(run.name).train / MANIFEST).read_text())["history"]
            rates.append(statistics.fmean(h["samples_per_s"] for h in history[1:]))
        return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=4, help="concurrent training runs per trial")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--trials", type=int, default=2, help="trials per setting, alternating")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    before = machine()
    settings = {"capped (default)": 0, f"uncapped (torch_threads={os.cpu_count()})": os.cpu_count()}
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.trials):
        for name, threads in settings.items():
            rates[name] += trial(threads, args)
    result = {"machine": describe(before), "loadavg_after": os.getloadavg()[0], "runs": args.runs,
              "steps": args.steps, "trials": args.trials, "samples_per_s": rates}
    print(f"{describe(before)}; {args.runs} concurrent CLIP runs (tiny, batch 128), {args.trials} trials each")
    print("| setting | runs | samples/s per run: median (min–max) | total samples/s (median x runs) |")
    print("|---|---:|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {len(values)} | {median:.0f} ({min(values):.0f}–{max(values):.0f}) | "
              f"{median * args.runs:.0f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
