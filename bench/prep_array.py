"""data=raw prep on SLURM as a job array (``cluster.prep_tasks``) vs one task: images/s per core, wall time, and
the flow process's CPU time as a share of the prep's whole CPU time (issue 16's goal: under 5 %).

Runs the prep stage as the sweep runs it (``flows.stages.prep_task`` with ``cluster=slurm``) on a folder of
real-photo JPEGs (``bench/photos.py``, 400-900 px, every 50th a byte copy of an earlier one) against the
SLURM cluster ``sinfo`` shows; the jobs' CPU time comes from ``sacct`` (TotalCPU), the flow process's from
``getrusage``. Needs a SLURM cluster with accounting (cluster/slurm-up.sh); without one it says so and stops.

    python bench/prep_array.py --images 600 --tasks 1 2 --json prep_array.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine  # noqa: E402

QUICK_ARGS = ["--images", "120", "--samples-per-shard", "20"]
NO_EVAL = ["eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="]


def cpu_seconds(total_cpu: str) -> float:
    """sacct's TotalCPU ([D-]HH:MM:SS or MM:SS.mmm) in seconds."""
    days, _, clock = total_cpu.rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + 86400 * int(days or 0)


def jobs_cpu(folder: Path) -> float:
    """TotalCPU of every job submitted from ``folder`` (array tasks and the final job), waiting for sacct."""
    ids = sorted({p.name.split("_")[0] for p in folder.glob("*_submission.sh")})
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State,TotalCPU", "-j", ",".join(ids)],
                             capture_output=True, text=True, check=True).stdout.split()
        rows = [line.split("|") for line in out]
        if rows and all(state == "COMPLETED" for _, state, _ in rows) or time.monotonic() > deadline:
            return sum(cpu_seconds(cpu) for _, _, cpu in rows)
        time.sleep(2)


def run(tmp: Path, images: Path, *, tasks: int, samples_per_shard: int, workers: int) -> dict:
    from flows import stages
    from ito_core.config import load_config

    cfg = load_config(["data=raw", "data.input_kind=folder", f"data.input={images}", "data.image_size=256",
                       f"data.samples_per_shard={samples_per_shard}", f"data.prep_workers={workers}", *NO_EVAL,
                       "cluster=slurm", f"cluster.prep_tasks={tasks}", f"cluster.cpus_per_task={workers}",
                       f"storage.root={tmp / f'store{tasks}'}", f"cluster.work_dir={tmp / f'work{tasks}'}"])
    usage, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    keys = stages.prep_task.fn(cfg)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    flow_cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    job_cpu = jobs_cpu(Path(cfg.cluster.work_dir).resolve() / keys["train"] / "prep-jobs")
    manifest = json.loads((tmp / f"store{tasks}" / keys["train"] / "manifest.json").read_text())
    return {"tasks": tasks, "wall_s": wall, "flow_cpu_s": flow_cpu, "jobs_cpu_s": job_cpu,
            "kept": manifest["num_samples"], "skipped": manifest["stats"]["skipped"],
            "images_per_core_s": manifest["num_samples"] / max(job_cpu, 1e-9),
            "flow_share": flow_cpu / (flow_cpu + job_cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--samples-per-shard", type=int, default=50)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, default=1, help="data.prep_workers (and CPUs) per task")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if shutil.which("sinfo") is None or not subprocess.run(["sinfo", "-h"], capture_output=True).stdout.strip():
        print("no SLURM cluster here (sinfo shows none): start one with cluster/slurm-up.sh", file=sys.stderr)
        return
    from photos import make_photos

    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-prep-array-") as tmp_dir:
        tmp, photos = Path(tmp_dir), make_photos(args.images, min_side=400, max_side=900)
        images = tmp / "images"
        images.mkdir()
        for i, photo in enumerate(photos):
            (images / f"{i:06d}.jpg").write_bytes(photos[i - 7] if i % 50 == 49 else photo)
            (images / f"{i:06d}.txt").write_text(f"a photo number {i}")
        rows = [run(tmp, images, tasks=t, samples_per_shard=args.samples_per_shard, workers=args.workers)
                for t in args.tasks]
    report = {"machine": info, "images": args.images, "samples_per_shard": args.samples_per_shard, "rows": rows}
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def table(report: dict) -> str:
    lines = [f"{describe(report['machine'])}; {report['images']} photos (400-900 px) -> 256 px, shards of "
             f"{report['samples_per_shard']}", "",
             "| array tasks | wall s | images/s per core (jobs' CPU) | jobs' CPU s | flow process CPU s | "
             "flow share of CPU | kept | skipped |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['tasks']} | {r['wall_s']:.1f} | {r['images_per_core_s']:.0f} | {r['jobs_cpu_s']:.1f} | "
                     f"{r['flow_cpu_s']:.2f} | {100 * r['flow_share']:.1f} % | {r['kept']} | {r['skipped']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
