"""data=raw prep on SLURM as a job array (``cluster.prep_tasks``) vs one task: images/s per core, wall time, and
the flow process's CPU time as a share of the prep's whole CPU time (issue 16's goal: under 5 %).

Runs the prep stage as the sweep runs it (``flows.stages.prep_task`` with ``cluster=slurm``) on a folder of
real-photo JPEGs (``bench/photos.py``, 400-900 px, every 50th a byte copy of an earlier one) against the
SLURM cluster ``sinfo`` shows. The jobs' CPU time is what each job reports of itself (``getrusage`` of its
process and the prep pool's workers, start-up and imports included); the flow process's is ``getrusage`` of
this process and its sbatch/squeue calls. Needs a SLURM cluster (cluster/slurm-up.sh); without one it says so and stops.

``--multinode`` submits to the 2-node cluster of cluster/mn-up.sh instead (``SLURM_CONF=--slurm-conf``) with
``cluster.cpus_per_task`` = a node's CPUs, so each array task takes a node of its own: ``--tasks 1 2`` is then
1 vs 2 nodes on the same input. Each row names the node each job ran on, its run time (submitit's log: start to
exit, without SLURM's queueing) and its CPU time (its interpreter's start-up included): the tasks', the final
job's, then the eval-set job's (nothing to prepare here: the benchmark sets no eval sets). A task that gets a core
to itself has run time ~ CPU time.

    python bench/prep_array.py --images 600 --tasks 1 2 --json prep_array.json
    python bench/prep_array.py --multinode --images 6000 --tasks 1 2 1 2 --json prep_nodes.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
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


def prep_jobs(folder: Path) -> list[dict]:
    """Each prep job submitted from ``folder``, in submission order (the array's tasks, the final job, the eval-set
    job of ``cluster.prep_jobs.run_prep_job``): the node
    it ran on and its run time (submitit's log: from ``(<time>) - Starting with JobEnvironment(job_id=...,
    hostname=mn1, ...`` to ``(<time>) - Exiting after successful completion``, no queueing), and the CPU seconds it
    reports of itself (its process and children: this cluster's accounting gathers no CPU time, sacct's TotalCPU
    reads 0)."""
    import submitit

    jobs = []
    for log in folder.glob("*_log.out"):
        text = log.read_text()
        start = re.search(r"\(([\d-]+ [\d:,]+)\) - Starting with JobEnvironment\(job_id=([\d_]+), hostname=([^,]+),",
                          text)
        end = re.findall(r"\(([\d-]+ [\d:,]+)\) - Exiting after successful completion", text)
        assert start and end, f"{log}: not a finished submitit job"
        job_id = start.group(2)
        jobs.append({"id": tuple(int(part) for part in job_id.split("_")), "node": start.group(3),
                     "run_s": (_log_time(end[-1]) - _log_time(start.group(1))).total_seconds(),
                     "cpu_s": submitit.SlurmJob(folder=folder, job_id=job_id).result()["cpu_s"]})
    return [{k: v for k, v in job.items() if k != "id"} for job in sorted(jobs, key=lambda job: job["id"])]


def _log_time(stamp: str) -> datetime.datetime:
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")


def node_cpus() -> int:
    """The fewest CPUs a node of the cluster has (``sinfo``): one task of that size fills a node."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c"], capture_output=True, text=True, check=True).stdout
    return min(int(cpus) for cpus in out.split())


def flow_cpu_seconds() -> float:
    """This process's CPU time and its finished children's (sbatch, squeue, sacct calls while it waits)."""
    used = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return sum(usage.ru_utime + usage.ru_stime for usage in used)


def run(tmp: Path, images: Path, *, tasks: int, samples_per_shard: int, workers: int, cpus: int) -> dict:
    from cluster.prep_jobs import PREP_JOBS
    from flows import stages
    from ito_core.artifacts import read_manifest
    from ito_core.config import load_config
    from ito_core.storage import build_store

    out = Path(tempfile.mkdtemp(prefix=f"tasks{tasks}-", dir=tmp))  # a fresh store per row: --tasks may repeat
    cfg = load_config(["data=raw", "data.input_kind=folder", f"data.input={images}", "data.image_size=256",
                       f"data.samples_per_shard={samples_per_shard}", f"data.prep_workers={workers}", *NO_EVAL,
                       "cluster=slurm", f"cluster.prep_tasks={tasks}", f"cluster.cpus_per_task={cpus}",
                       f"storage.root={out / 'store'}", f"cluster.work_dir={out / 'work'}"])
    before, wall = flow_cpu_seconds(), time.perf_counter()
    keys = stages.prep_task.fn(cfg)
    wall, flow_cpu = time.perf_counter() - wall, flow_cpu_seconds() - before
    jobs = prep_jobs(Path(cfg.cluster.work_dir).resolve() / keys["train"] / PREP_JOBS)
    job_cpu = sum(job["cpu_s"] for job in jobs)
    manifest = read_manifest(build_store(cfg.storage), keys["train"])
    return {"tasks": tasks, "jobs": jobs, "wall_s": wall, "flow_cpu_s": flow_cpu, "jobs_cpu_s": job_cpu,
            "kept": manifest["num_samples"], "skipped": manifest["stats"]["skipped"],
            "images_per_core_s": manifest["num_samples"] / max(job_cpu, 1e-9),
            "flow_share": flow_cpu / (flow_cpu + job_cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--samples-per-shard", type=int, default=50)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, default=1, help="data.prep_workers per task (and its CPUs, "
                        "but for --multinode)")
    parser.add_argument("--multinode", action="store_true", help="submit to the multi-node cluster, a task per node")
    parser.add_argument("--slurm-conf", default="/tmp/mn-slurm/slurm.conf", help="its slurm.conf (--multinode)")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if args.multinode:
        os.environ["SLURM_CONF"] = args.slurm_conf  # sbatch, squeue, sacct and sinfo, from here and submitit
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
        cpus = node_cpus() if args.multinode else args.workers
        rows = [run(tmp, images, tasks=t, samples_per_shard=args.samples_per_shard, workers=args.workers, cpus=cpus)
                for t in args.tasks]
    report = {"machine": info, "images": args.images, "samples_per_shard": args.samples_per_shard,
              "workers": args.workers, "cpus_per_task": cpus, "multinode": args.multinode, "rows": rows}
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def table(report: dict) -> str:
    lines = [f"{describe(report['machine'])}; {report['images']} photos (400-900 px) -> 256 px, shards of "
             f"{report['samples_per_shard']}, {report['workers']} prep worker(s) per task, "
             f"cluster.cpus_per_task={report['cpus_per_task']}", "",
             "| array tasks | jobs: node, run s / CPU s (tasks; final; eval sets) | wall s | "
             "images/s per core (jobs' CPU) | jobs' CPU s | flow process CPU s | flow share of CPU | kept | skipped |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in report["rows"]:
        jobs = [f"{job['node']} {job['run_s']:.1f} / {job['cpu_s']:.1f}" for job in r["jobs"]]
        lines.append(f"| {r['tasks']} | {'; '.join([', '.join(jobs[:r['tasks']]), *jobs[r['tasks']:]])} "
                     f"| {r['wall_s']:.1f} | {r['images_per_core_s']:.0f} | {r['jobs_cpu_s']:.1f} | "
                     f"{r['flow_cpu_s']:.2f} | {100 * r['flow_share']:.1f} % | {r['kept']} | {r['skipped']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
