"""data=raw prep on SLURM as a job array (``cluster.prep_tasks``) vs one task: images/s per core, wall time, and
the flow process's CPU time as a share of the prep's whole CPU time (issue 16's goal: under 5 %).

Runs the prep stage as the sweep runs it (``flows.stages.prep_task`` with ``cluster=slurm``) on a folder of
real-photo JPEGs (``bench/photos.py``, 400-900 px, every 50th a byte copy of an earlier one) against the
SLURM cluster ``sinfo`` shows. The jobs' CPU time is what each job reports of itself (``getrusage`` of its
process and the prep pool's workers, start-up and imports included); the flow process's is ``getrusage`` of
this process and its sbatch/squeue calls. Needs a SLURM cluster (cluster/slurm-up.sh); without one it says so and stops.

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


def jobs_cpu(folder: Path) -> float:
    """CPU seconds the prep jobs submitted from ``folder`` report (each measures its own process and children:
    this cluster's accounting gathers no CPU time, so sacct's TotalCPU reads 0)."""
    import submitit

    ids = sorted(p.name.removesuffix("_0_result.pkl") for p in folder.glob("*_0_result.pkl"))
    return sum(submitit.SlurmJob(folder=folder, job_id=job_id).result()["cpu_s"] for job_id in ids)


def flow_cpu_seconds() -> float:
    """This process's CPU time and its finished children's (sbatch, squeue, sacct calls while it waits)."""
    used = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in used)


def run(tmp: Path, images: Path, *, tasks: int, samples_per_shard: int, workers: int) -> dict:
    from cluster.prep_jobs import PREP_JOBS
    from flows import stages
    from ito_core.artifacts import read_manifest
    from ito_core.config import load_config
    from ito_core.storage import build_store

    cfg = load_config(["data=raw", "data.input_kind=folder", f"data.input={images}", "data.image_size=256",
                       f"data.samples_per_shard={samples_per_shard}", f"data.prep_workers={workers}", *NO_EVAL,
                       "cluster=slurm", f"cluster.prep_tasks={tasks}", f"cluster.cpus_per_task={workers}",
                       f"storage.root={tmp / f'store{tasks}'}", f"cluster.work_dir={tmp / f'work{tasks}'}"])
    before, wall = flow_cpu_seconds(), time.perf_counter()
    keys = stages.prep_task.fn(cfg)
    wall, flow_cpu = time.perf_counter() - wall, flow_cpu_seconds() - before
    job_cpu = jobs_cpu(Path(cfg.cluster.work_dir).resolve() / keys["train"] / PREP_JOBS)
    manifest = read_manifest(build_store(cfg.storage), keys["train"])
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
