"""Weak scaling on the multi-node SLURM cluster (cluster/mn-up.sh): training samples/s of 2 nodes vs 1 node at the
same per-rank batch, one rank and one CPU per node, the tiny model.

Each run is a real training job submitted through ``cluster.jobs.submit_training`` (DeepSpeed on gloo across the
nodes' network namespaces); its throughput is the mean ``samples_per_s`` of the training history after the first
row (warm-up). Node counts alternate round by round. The communication share of the 2-node step is the step time
it adds over the 1-node step at the same per-rank work: (t2 - t1) / t2, with t = per-rank batch / (samples/s per
rank). On this machine both "nodes" share the machine's cores and talk through a veth bridge with no latency, so
the figure shows what our code adds across nodes (rendezvous, gradient all-reduce over TCP, per-node staging), not
what a real network costs; the nodes compete for the cores only if anything else runs.

    bash cluster/mn-up.sh && python bench/multinode_scaling.py [--steps 40] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine, use_multinode_cluster  # noqa: E402

SHARDS, SAMPLES_PER_SHARD = 16, 32


def train_once(tmp: Path, shards: list[str], *, nodes: int, per_rank_batch: int, steps: int, log_every: int) -> dict:
    from cluster.jobs import submit_training
    from ito_core.artifacts import run_key
    from ito_core.config import load_config

    run = tmp / f"n{nodes}-{len(list(tmp.iterdir()))}"
    cfg = load_config(["model=tiny", "cluster=slurm", f"cluster.nodes={nodes}", "cluster.tasks_per_node=1",
                       "cluster.cpus_per_task=1", "cluster.timeout_min=30",
                       f"train.batch_size={per_rank_batch * nodes}",
                       f"train.steps={steps}", f"train.log_every={log_every}", f"train.checkpoint_every={steps}",
                       "train.warmup_steps=0", "data.num_workers=0", "wandb=disabled",
                       f"storage.root={run / 'store'}", f"cluster.work_dir={run / 'work'}",
                       f"cluster.scratch_dir={run / 'scratch'}"])
    job = submit_training(cfg, shard_paths=shards, shard_samples=[SAMPLES_PER_SHARD] * SHARDS, run_key=run_key(cfg))
    rows = job.results()[0]["history"][1:]  # the first row holds start-up and warm-up
    samples_per_s = statistics.mean(row["samples_per_s"] for row in rows)
    return {"nodes": nodes, "samples_per_s": samples_per_s, "per_rank_samples_per_s": samples_per_s / nodes,
            "step_s": per_rank_batch * nodes / samples_per_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--per-rank-batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    use_multinode_cluster()

    from ito_core.data.embedded import shapes_samples
    from ito_core.data.shards import write_shards

    runs: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="mn-scaling-", dir="/tmp") as tmp:
        root = Path(tmp)
        manifest = write_shards(shapes_samples("train", num_samples=SHARDS * SAMPLES_PER_SHARD, image_size=32),
                                root / "shards", image_size=32, samples_per_shard=SAMPLES_PER_SHARD, jpeg_quality=90)
        shards = [str(root / "shards" / shard["name"]) for shard in manifest["shards"]]
        (root / "runs").mkdir()
        for _ in range(args.rounds):
            for nodes in (1, 2):
                runs[nodes].append(train_once(root / "runs", shards, nodes=nodes, per_rank_batch=args.per_rank_batch,
                                              steps=args.steps, log_every=args.log_every))
                print(runs[nodes][-1], flush=True)
    best = {n: max(r["samples_per_s"] for r in rs) for n, rs in runs.items()}
    step = {n: min(r["step_s"] for r in rs) for n, rs in runs.items()}
    report = {"machine": machine(), "args": vars(args), "runs": runs, "best_samples_per_s": best,
              "weak_scaling_2_vs_1": best[2] / best[1], "communication_share_2_nodes": (step[2] - step[1]) / step[2]}
    print(f"machine: {describe(report['machine'])}")
    print(f"1 node {best[1]:.1f} samples/s, 2 nodes {best[2]:.1f} samples/s (best of {args.rounds}): "
          f"{report['weak_scaling_2_vs_1']:.2f}x; the 2-node step spends "
          f"{100 * report['communication_share_2_nodes']:.0f} % of its time beyond the 1-node step")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
