"""DeepSpeed ZeRO stages 0-3: measured on CPU (gloo, 2 ranks) and projected to 8/64/512 GPUs.

Measured: for each ZeRO stage, 2 rank processes build the real engine (``ito_core.train.build_engine``) and
step it the way the training loop does (``GradientAccumulation`` forward, ``try_update``: the all-rank finite
check, backward, optimizer step) on a fixed batch, with no data loading or augmentation. All stages run at once
as 4 process groups and are stepped one after the other, round by round, so a busy neighbour slows every
stage alike. Step time = the slower rank; peak RSS per rank; optimizer state held per rank.

Projected (analytic; ZeRO paper, Rajbhandari et al. 2020, sec. 7): bytes each GPU sends per step, for Psi
parameters at ``--bytes`` per element on n data-parallel GPUs, with ring collectives:

- ZeRO 0, 1, 2: an all-reduce of the gradients (0), or a reduce-scatter of the gradients plus an all-gather
  of the updated parameters (1, 2): 2 (n-1)/n Psi bytes.
- ZeRO 3: the parameters all-gathered in the forward and again in the backward, plus a reduce-scatter of
  the gradients: 3 (n-1)/n Psi bytes.
- The contrastive loss gathers every GPU's features (``ito_core.losses.gather_features``, with gradient):
  an all-gather forward and a reduce-scatter backward of n b D F elements (b samples per GPU, D the embed
  width, F features per sample: 1 image + 1 text for CLIP; M + N + M x N fused for ITO), 2 (n-1) b D F
  bytes, growing with n where the ZeRO traffic does not.

Time: a ring inside a node at ``--nvlink-gbytes`` per GPU plus, across n/g nodes of g GPUs, the hierarchical
ring's inter-node part, 2 (k/2) (N-1)/N S bytes through each node's ``--node-gbit`` NICs (k = 2 or 3 passes of
S = Psi bytes; for features S = the gathered tensor). No overlap with compute is assumed: DeepSpeed overlaps
ZeRO's reduce-scatter with the backward (``overlap_comm``), which hides part of it.

    python bench/zero_stages.py --model-config tiny --rounds 10 --json zero.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import describe, machine  # noqa: E402

QUICK_ARGS = ["--rounds", "3", "--warmup", "1"]  # bench/all.py --quick
STAGES = (0, 1, 2, 3)
VARIANTS = {"CLIP": ["ito=clip"], "ITO M=2": ["ito=ito"]}  # ITO as released: M=2, N=1, transformer fusion
PROJECTED_MODELS = {"ViT-B/16": "vit_b_16", "ViT-L/14": "vit_l_14"}
PROJECTED_GPUS = (8, 64, 512)
CAPTIONS = ["a red circle above a small blue square", "a photo of an ankle boot.", "two stars and a cross"]


# ---- projection ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Links:
    """Bandwidths the projection assumes (GB = 1e9 bytes)."""

    gpus_per_node: int = 8
    nvlink_gbytes: float = 360.0  # per GPU, NCCL ring bus bandwidth inside an H100 NVLink node
    node_gbit: float = 400.0  # InfiniBand per node (a DGX H100 has 8 x 400 Gb/s: pass 3200)


def zero_passes(stage: int) -> int:
    """Passes of Psi elements each GPU sends (x (n-1)/n) per step: 2 for ZeRO 0-2, 3 for ZeRO 3."""
    if stage not in STAGES:
        raise ValueError(f"ZeRO stage {stage}; choose one of {STAGES}")
    return 3 if stage == 3 else 2


def bytes_per_gpu(total_bytes: float, *, passes: float, gpus: int) -> float:
    """What each GPU sends in ``passes`` ring passes (all-gather or reduce-scatter) over a ``total_bytes`` tensor."""
    return passes * (gpus - 1) / gpus * total_bytes


def gathered_feature_bytes(*, batch_per_gpu: int, dim: int, features: int, gpus: int, bytes_per_element: int) -> int:
    """The contrastive loss's all-gathered tensor: every GPU's ``features`` vectors of ``dim`` per sample."""
    return gpus * batch_per_gpu * dim * features * bytes_per_element


def ring_seconds(total_bytes: float, *, passes: float, gpus: int, links: Links) -> float:
    """``passes`` ring passes over a ``total_bytes`` tensor: NVLink inside the node, then the nodes' NICs."""
    in_node = min(gpus, links.gpus_per_node)
    nodes = max(1, gpus // links.gpus_per_node)
    intra = passes * (in_node - 1) / in_node * total_bytes / (links.nvlink_gbytes * 1e9)
    inter = passes * (nodes - 1) / nodes * total_bytes / (links.node_gbit / 8 * 1e9)
    return intra + inter


def projection(args: argparse.Namespace, models: dict[str, str] = PROJECTED_MODELS) -> list[dict[str, Any]]:
    """One row per (model, variant, GPU count): bytes per GPU and seconds per step, and compute for scale."""
    import torch

    from ito_core.config import fuses, load_config
    from ito_core.flops import train_flops_per_sample
    from ito_core.methods import build_model

    links = Links(args.gpus_per_node, args.nvlink_gbytes, args.node_gbit)
    rows = []
    for model_name, model_config in models.items():
        for variant, overrides in VARIANTS.items():
            cfg = load_config([f"model={model_config}", *overrides])
            with torch.device("meta"):  # counts parameters without allocating them
                model = build_model(cfg)
                params = sum(p.numel() for p in model.parameters())
            fused = cfg.ito.images * cfg.ito.texts if fuses(cfg.ito) else 0
            features = cfg.ito.images + cfg.ito.texts + fused
            compute_s = (train_flops_per_sample(cfg.model, cfg.ito) * args.batch_per_gpu
                         / (args.peak_tflops * 1e12 * args.mfu))
            for gpus in PROJECTED_GPUS:
                gathered = gathered_feature_bytes(batch_per_gpu=args.batch_per_gpu, dim=cfg.model.embed_dim,
                                                  features=features, gpus=gpus, bytes_per_element=args.bytes)
                row = {"model": model_name, "variant": variant, "gpus": gpus, "params": params,
                       "features_per_sample": features,  # all-gather forward + reduce-scatter backward: 2 passes
                       "feature_gb_per_gpu": bytes_per_gpu(gathered, passes=2, gpus=gpus) / 1e9,
                       "feature_s": ring_seconds(gathered, passes=2, gpus=gpus, links=links), "compute_s": compute_s}
                for stage in (0, 3):  # 1 and 2 move what 0 moves
                    passes = zero_passes(stage)
                    row[f"zero{stage}_gb_per_gpu"] = bytes_per_gpu(params * args.bytes, passes=passes, gpus=gpus) / 1e9
                    row[f"zero{stage}_s"] = ring_seconds(params * args.bytes, passes=passes, gpus=gpus, links=links)
                rows.append(row)
    return rows


# ---- measurement --------------------------------------------------------------------------------------------

def worker(args: argparse.Namespace) -> None:
    """One rank of one stage (RANK, WORLD_SIZE, MASTER_* in the environment), driven over stdin/stdout."""
    import resource

    import torch

    from ito_core.accumulation import GradientAccumulation
    from ito_core.config import accumulation_steps, load_config
    from ito_core.data.tokenizer import build_tokenizer
    from ito_core.distributed import init_distributed
    from ito_core.methods import build_objective
    from ito_core.train import build_engine, try_update

    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # DeepSpeed prints to stdout: keep it out of the protocol
    torch.set_num_threads(args.threads)
    cfg = load_config([f"model={args.model_config}", *VARIANTS[args.variant], f"deepspeed=zero{args.stage}",
                       f"deepspeed.precision={args.precision}", f"train.batch_size={args.batch_size}"])
    env = init_distributed()
    engine = build_engine(cfg, env)
    objective = build_objective(cfg, engine.module, rank=env.rank, world_size=env.world_size)
    accum = GradientAccumulation(engine, objective, steps=accumulation_steps(cfg.train, env.world_size))
    per_rank, size = cfg.train.batch_size // env.world_size, cfg.model.image_size
    seeded = torch.Generator().manual_seed(env.rank)
    images_BMCHW = torch.randn(per_rank, cfg.ito.images, 3, size, size, generator=seeded)
    tokens = build_tokenizer(cfg.model.context_length)([CAPTIONS[i % len(CAPTIONS)] for i in range(per_rank)])
    tokens_BNL = tokens[:, None].expand(-1, cfg.ito.texts, -1).contiguous()
    ready_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def reply(obj: dict[str, Any]) -> None:
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    reply({"ready": True})
    for line in sys.stdin:
        if line.strip() == "step":
            torch.distributed.barrier()  # both ranks start together: the step time is the collective step's
            start = time.perf_counter()
            losses = accum.forward(images_BMCHW, tokens_BNL)
            problem = try_update(accum, losses, precision=cfg.deepspeed.precision)
            reply({"t": time.perf_counter() - start, "loss": losses["loss"].item(), "problem": problem})
        else:
            base = getattr(engine.optimizer, "optimizer", engine.optimizer)  # ZeRO wraps the client AdamW
            state = sum(t.numel() * t.element_size() for s in base.state.values() for t in s.values()
                        if torch.is_tensor(t))
            reply({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ready_rss_mb": ready_rss,
                   "optimizer_state_mb": state / 2**20,
                   "params": sum(p.numel() for p in engine.module.parameters())})
            return


class Rank:
    def __init__(self, args: argparse.Namespace, *, stage: int, rank: int, port: int, log: Path) -> None:
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "DS_ACCELERATOR": "cpu",
               "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONWARNINGS": "ignore"}
        argv = [sys.executable, __file__, "--worker", "--stage", str(stage), "--model-config", args.model_config,
                "--variant", args.variant, "--precision", args.precision, "--batch-size", str(args.batch_size),
                "--threads", str(args.threads)]
        with log.open("w") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                         env=env)
        self.log = log

    def send(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"rank died (exit {self.proc.wait()}); its log:\n{self.log.read_text()[-3000:]}")
        return json.loads(line)


def measure(args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from ito_core.distributed import free_port

    groups: dict[int, list[Rank]] = {}
    try:
        for stage in args.stages:  # one group at a time through start-up (the first JIT-builds DeepSpeed's shm op)
            port = free_port()
            groups[stage] = [Rank(args, stage=stage, rank=r, port=port, log=logs / f"zero{stage}-rank{r}.log")
                             for r in range(2)]
            for rank in groups[stage]:
                rank.receive()
            print(f"ZeRO-{stage}: engine ready", file=sys.stderr, flush=True)
        times: dict[int, list[float]] = {stage: [] for stage in args.stages}
        losses: dict[int, list[float]] = {stage: [] for stage in args.stages}
        for r in range(args.warmup + args.rounds):
            for stage, ranks in groups.items():  # interleaved: every round steps every stage
                for rank in ranks:
                    rank.send("step")
                out = [rank.receive() for rank in ranks]
                losses[stage].append(out[0]["loss"])
                if r >= args.warmup:
                    times[stage].append(max(o["t"] for o in out))
            print(f"round {r + 1}/{args.warmup + args.rounds} done", file=sys.stderr, flush=True)
        stats = {}
        for stage, ranks in groups.items():
            for rank in ranks:
                rank.send("quit")
            finals = [rank.receive() for rank in ranks]
            stats[stage] = {"step_s_best": min(times[stage]), "step_s_median": statistics.median(times[stage]),
                            "losses": losses[stage], "ranks": finals}
    finally:
        for ranks in groups.values():
            for rank in ranks:
                if rank.proc.poll() is None:
                    rank.proc.kill()
    return stats


# ---- report -------------------------------------------------------------------------------------------------

def print_tables(result: dict[str, Any]) -> None:
    print(f"\n{describe(result['machine'])}")
    if "measured" in result:
        m = result["measured_setup"]
        print(f"\n### ZeRO stages on CPU: {m['model_config']} {m['variant']}, {m['precision']}, global batch "
              f"{m['batch_size']} on 2 gloo ranks, {m['threads']} thread(s) each, {m['rounds']} rounds\n")
        print("| ZeRO | step ms best (median) | vs first row | peak RSS MB rank 0 / 1 | step RSS MB rank 0 | "
              "optimizer state MB per rank | loss after the rounds |\n|---|---:|---:|---:|---:|---:|---:|")
        base = next(iter(result["measured"].values()))["step_s_best"]
        for stage, s in result["measured"].items():
            r0, r1 = s["ranks"]
            print(f"| {stage} | {1e3 * s['step_s_best']:.1f} ({1e3 * s['step_s_median']:.1f}) | "
                  f"{s['step_s_best'] / base:.2f}x | {r0['peak_rss_mb']:.0f} / {r1['peak_rss_mb']:.0f} | "
                  f"{r0['peak_rss_mb'] - r0['ready_rss_mb']:.0f} | {r0['optimizer_state_mb']:.1f} | "
                  f"{s['losses'][-1]:.5f} |")
    a = result["assumptions"]
    print(f"\n### Projected communication per step and GPU ({a['bytes']} bytes per element, {a['batch_per_gpu']} "
          f"samples per GPU; {a['gpus_per_node']} GPUs per node, NVLink {a['nvlink_gbytes']:g} GB/s per GPU, "
          f"{a['node_gbit']:g} Gb/s per node; compute at {100 * a['mfu']:.0f} % MFU of {a['peak_tflops']:g} "
          "TFLOP/s)\n")
    print("| model | variant | GPUs | params | ZeRO 0-2 GB/GPU | ZeRO 3 GB/GPU | features GB/GPU | ZeRO 0-2 ms | "
          "ZeRO 3 ms | features ms | compute ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["projection"]:
        print(f"| {r['model']} | {r['variant']} | {r['gpus']} | {r['params']:,} | {r['zero0_gb_per_gpu']:.3f} | "
              f"{r['zero3_gb_per_gpu']:.3f} | {r['feature_gb_per_gpu']:.3f} | {1e3 * r['zero0_s']:.1f} | "
              f"{1e3 * r['zero3_s']:.1f} | {1e3 * r['feature_s']:.1f} | {1e3 * r['compute_s']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="tiny", help="measured: configs/model/<name>.yaml")
    parser.add_argument("--variant", choices=list(VARIANTS), default="ITO M=2")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--batch-size", type=int, default=16, help="measured: global batch (half per rank)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per rank")
    parser.add_argument("--stages", type=lambda text: [int(x) for x in text.split(",")], default=list(STAGES),
                        help="measured stages, run side by side (2 processes each: mind the memory)")
    parser.add_argument("--no-measure", action="store_true", help="only the projection")
    parser.add_argument("--batch-per-gpu", type=int, default=128, help="projection: samples per GPU")
    parser.add_argument("--bytes", type=int, default=2, help="projection: bytes per element (bf16: 2)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--nvlink-gbytes", type=float, default=360.0, help="GB/s per GPU inside a node")
    parser.add_argument("--node-gbit", type=float, default=400.0, help="Gb/s per node between nodes")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="projection: H100 SXM bf16 dense")
    parser.add_argument("--mfu", type=float, default=0.4, help="projection: model FLOPs utilisation")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    result: dict[str, Any] = {"machine": machine(), "projection": projection(args), "assumptions": {
        k: getattr(args, k) for k in ("batch_per_gpu", "bytes", "gpus_per_node", "nvlink_gbytes", "node_gbit",
                                      "peak_tflops", "mfu")}}
    if not args.no_measure:
        with tempfile.TemporaryDirectory(prefix="bench-zero-") as tmp:
            result["measured"] = {str(k): v for k, v in measure(args, Path(tmp)).items()}
        result["measured_setup"] = {k: getattr(args, k) for k in ("model_config", "variant", "precision",
                                                                   "batch_size", "threads", "rounds", "warmup",
                                                                   "stages")}
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result) + "\n")
    return None


if __name__ == "__main__":
    main()
