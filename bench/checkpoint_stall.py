"""The training stall per checkpoint, synchronous vs asynchronous upload (``train.async_checkpoint``), on the
multi-node SLURM cluster (cluster/mn-up.sh) against a real S3 server (``rclone serve s3``).

Each run is a real training job submitted through ``cluster.jobs.submit_training``: 2 nodes x 1 rank, ZeRO-2, bf16,
OpenCLIP ViT-B/16 shapes (149.6 M parameters, so the checkpoint has B/16's size: a 299 MB model file written by rank 0
and one 898 MB optimizer shard per rank) on 32 px images (2 x 2 patches: the compute is small, the weights are not).
The S3 server is bound to the root namespace's link into the cluster's bridge, which every node reaches.

- stall: the seconds rank 0's training loop was held by a checkpoint (``checkpoint_held_s`` of the train summary:
  the save call, with the upload and commit when synchronous; when asynchronous, the save call's copy of the state
  into host memory, the wait for the previous checkpoint's background write and upload, and the commit).
  Checkpoints before the last are the steady state; the last one is reported apart, since a run commits its last
  checkpoint before it reports success, whichever the mode.
- cost: the wall-clock time the run spent beyond its median step, per checkpoint before the last (from the times of
  rank 0's per-step log lines): it also counts the steps slowed down by a background write or upload competing for
  the cores, which the stall leaves out.

Modes alternate round by round.

    bash cluster/mn-up.sh && python bench/checkpoint_stall.py [--steps 30] [--every 10] [--rounds 1] \
        [--nodelist mn1,mn2] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, use_multinode_cluster  # noqa: E402
from fixtures.multinode_cluster import bridge_address  # noqa: E402

QUICK_ARGS = ["--steps", "8", "--every", "4"]
SHARDS, SAMPLES_PER_SHARD, IMAGE_SIZE = 8, 32, 32


def step_times(log: str) -> list[float]:
    """Seconds between rank 0's consecutive ``step N/M`` log lines (the history's samples/s is rounded to 0.1)."""
    stamps = [datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for m in re.finditer(r"^(\S+ \S+) INFO ito_core.train: step \d+/", log, flags=re.M)]
    return [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]


def checkpoint_lines(log: str) -> list[str]:
    """Rank 0's lines on each checkpoint: the snapshot's size, the write and upload times and waits."""
    return re.findall(r"checkpoint step_\d+(?::| written| uploaded) [^\n]*", log)


def train_once(tmp: Path, shards: list[str], bucket_url: str, endpoint: str, *, asynchronous: bool, steps: int,
               every: int, nodelist: str) -> dict:
    from cluster.jobs import submit_training
    from ito_core.artifacts import run_key
    from ito_core.checkpoint import tag_for
    from ito_core.config import load_config

    run = tmp / f"{'async' if asynchronous else 'sync'}-{len(list(tmp.iterdir()))}"
    cfg = load_config([
        "method=clip", "model=vit_b_16", f"model.image_size={IMAGE_SIZE}", f"data.image_size={IMAGE_SIZE}",
        "deepspeed=zero2", "deepspeed.precision=bf16", "cluster=slurm", "cluster.nodes=2", "cluster.tasks_per_node=1",
        "cluster.cpus_per_task=1", "cluster.mem_gb=5", "cluster.timeout_min=30", "train.batch_size=4",
        f"train.steps={steps}", f"train.checkpoint_every={every}", "train.log_every=1", "train.warmup_steps=0",
        "train.keep_checkpoints=1", f"train.async_checkpoint={str(asynchronous).lower()}", "data.num_workers=0",
        "wandb=disabled", "storage=s3", f"storage.root={bucket_url}/{run.name}", f"storage.endpoint_url={endpoint}",
        "storage.retry_deadline_s=600",  # on a loaded machine the S3 server is slow, not gone
        f"cluster.work_dir={run / 'work'}", f"cluster.scratch_dir={run / 'scratch'}",
        *([f"+cluster.extra_sbatch.nodelist='{nodelist}'"] if nodelist else [])])
    job = submit_training(cfg, shard_paths=shards, shard_samples=[SAMPLES_PER_SHARD] * SHARDS, run_key=run_key(cfg))
    summary = job.results()[0]
    held, last = summary["checkpoint_held_s"], tag_for(steps)
    log = job.task(0).stderr() or ""
    step_s = step_times(log)[1:]  # the first step holds the warm-up
    median = statistics.median(step_s)
    before_last = len(range(every, steps, every))  # the last save comes after the last step line: not in step_s
    return {"mode": "async" if asynchronous else "sync", "held_s": held,
            "stall_s": [s for tag, s in held.items() if tag != last], "last_stall_s": held[last],
            "median_step_s": median, "cost_per_checkpoint_s": (sum(step_s) - median * len(step_s)) / before_last,
            "step_s": step_s, "checkpoint_log": checkpoint_lines(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=10, help="train.checkpoint_every")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--nodelist", default="", help="SLURM nodes to run on, e.g. mn1,mn2 (default: any two)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    use_multinode_cluster()

    from fixtures.s3_server import running_s3_server

    from ito_core.data.embedded import shapes_samples
    from ito_core.data.shards import write_shards

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ckpt-stall-", dir="/tmp") as tmp:
        root = Path(tmp)
        manifest = write_shards(shapes_samples("train", num_samples=SHARDS * SAMPLES_PER_SHARD, image_size=IMAGE_SIZE),
                                root / "shards", image_size=IMAGE_SIZE, samples_per_shard=SAMPLES_PER_SHARD,
                                jpeg_quality=90)
        shards = [str(root / "shards" / shard["name"]) for shard in manifest["shards"]]
        (root / "runs").mkdir()
        (root / "s3").mkdir()
        with running_s3_server(root / "s3", host=bridge_address()) as server:
            os.environ.update(AWS_ACCESS_KEY_ID=server.key, AWS_SECRET_ACCESS_KEY=server.secret,
                              AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true")
            bucket = f"s3://{server.new_bucket('stall')}"
            for _ in range(args.rounds):
                for asynchronous in (False, True):
                    runs.append(train_once(root / "runs", shards, bucket, server.endpoint_url,
                                           asynchronous=asynchronous, steps=args.steps, every=args.every,
                                           nodelist=args.nodelist))
                    print(runs[-1], flush=True)
                    if args.json:  # each run as it ends: a later failure loses nothing
                        Path(args.json).write_text(json.dumps({"machine": machine(), "runs": runs}, indent=2))
    stall = {mode: statistics.median(s for r in runs if r["mode"] == mode for s in r["stall_s"])
             for mode in ("sync", "async")}
    report = {"machine": machine(), "args": vars(args), "runs": runs, "median_stall_s": stall,
              "async_vs_sync": stall["async"] / stall["sync"]}
    print(f"machine: {describe(report['machine'])}")
    print("| mode | stall per checkpoint before the last, s (each) | last checkpoint, s | median step, s | "
          "wall-clock cost per checkpoint, s |\n|---|---|---:|---:|---:|")
    for r in runs:
        print(f"| {r['mode']} | {', '.join(f'{s:.2f}' for s in r['stall_s'])} | {r['last_stall_s']:.2f} | "
              f"{r['median_step_s']:.2f} | {r['cost_per_checkpoint_s']:.2f} |")
    print(f"stall per checkpoint (median, before the last): sync {stall['sync']:.2f} s, async {stall['async']:.2f} s "
          f"= {100 * report['async_vs_sync']:.1f} % of sync (goal <= 10 %)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
