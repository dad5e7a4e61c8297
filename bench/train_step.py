"""Training-step cost: OpenCLIP vs our CLIP baseline vs ITO (M=2 with and without fusion, M=4), same model config.

One step = forward, loss, backward, AdamW step, timed with ``perf_counter`` around the whole step. It is a plain
PyTorch step with ``torch.optim.AdamW`` (same hyper-parameters for every model), not the DeepSpeed engine that
``ito_core.train`` uses, so engine overhead (ZeRO bookkeeping, gradient clipping, the all-rank finite check) is
not in these numbers. Every model runs in its own worker process (ours under this python, OpenCLIP's under
``--open-clip-python``), so each has its own peak RSS. The orchestrator drives the workers round by round: every
round times one step of every model, one at a time, so a neighbour process slowing the machine hurts all models
alike. Tables show the best round (noise only ever adds time) and the median; ratios are also given as the
median of per-round ratios.

    python bench/train_step.py --model-config tiny --batch-size 64 --open-clip-python /tmp/ocvenv/bin/python
    python bench/train_step.py --model-config vit_s_32 --batch-size 8 --rounds 5 --open-clip-python ...

OpenCLIP's model is built with ``open_clip.create_model(name, pretrained=None)`` from the model config that
``ito_core.export.open_clip_model_config`` writes for our config, and loaded (strict) with our CLIP baseline's
initial weights through ``OpenClipStateDictAdapter``; its loss is ``open_clip.ClipLoss``. Same batch (view 0 of
the images, caption 0), same thread count. MFU = analytic model FLOPs (``ito_core.flops.train_flops_per_sample``) x
samples/s / the best fp32 matmul FLOP/s this script measures at the same thread count, before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Worker  # noqa: E402

from ito_core.config import RunConfig, load_config  # noqa: E402
from ito_core.data.tokenizer import build_tokenizer  # noqa: E402
from ito_core.flops import forward_flops_per_sample, train_flops_per_sample  # noqa: E402
from ito_core.models.ito import ItoModel  # noqa: E402

QUICK_ARGS = ["--rounds", "3", "--warmup", "1", "--threads", "1"]  # bench/all.py --quick
CAPTIONS = ["a red circle above a small blue square", "a photo of an ankle boot.", "two stars and a cross"]
PEER = "OpenCLIP CLIP (peer)"
BASELINE = "CLIP baseline"
# name -> ITO config overrides (on top of model=...); the peer mirrors the CLIP baseline.
VARIANTS = {
    BASELINE: ["ito=clip"],
    "ITO M=2 fusion": ["ito=ito"],
    "ITO M=2 no fusion": ["ito=ito", "ito.fusion=none", "ito.fusion_weight=0"],
    "ITO M=4 fusion": ["ito=ito", "ito.images=4"],
}
LR, WEIGHT_DECAY = 1e-4, 0.1

# Worker protocol (stdin -> stdout, one JSON line per command): "step" -> {"t", "loss"}; "flops" -> torch's
# FlopCounterMode count of one fwd+bwd per sample; "profile" -> torch.profiler's op table of one step; "quit" ->
# RSS figures. Shared by both workers below.
WORKER_LOOP = r"""
def _rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

PROFILE_ROWS = 12

def serve(step, count_flops, batch_size):
    import json, resource, sys, time
    ready_rss = _rss_mb()
    print(json.dumps({"ready": True, "params": PARAMS}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            t = time.perf_counter(); loss = step(); t = time.perf_counter() - t
            print(json.dumps({"t": t, "loss": loss}), flush=True)
        elif cmd == "flops":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            from torch.utils.flop_counter import FlopCounterMode
            counter = FlopCounterMode(display=False)
            with sdpa_kernel(SDPBackend.MATH), counter:  # CPU flash attention has no FLOP formula
                count_flops()
            print(json.dumps({"flops": counter.get_total_flops() / batch_size}), flush=True)
        elif cmd == "profile":
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                step()
            averages = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in averages)
            top = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:PROFILE_ROWS]
            rows = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total,
                     "calls": e.count} for e in top]
            print(json.dumps({"profile": rows, "total_ms": total / 1e3}), flush=True)
        elif cmd == "quit":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps({"peak_rss_mb": peak, "ready_rss_mb": ready_rss}), flush=True)
            return
"""

# Runs under the OpenCLIP venv's python; imports no ito_core.
PEER_WORKER = WORKER_LOOP + r"""
import json, sys, tempfile, torch, open_clip
from pathlib import Path
from safetensors.torch import load_file
export_dir, inputs_path, threads = sys.argv[1:4]
torch.set_num_threads(int(threads))
config = json.loads((Path(export_dir) / "open_clip_config.json").read_text())
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / "ito-bench.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(Path(tmp) / "ito-bench.json")
model = open_clip.create_model("ito-bench", pretrained=None, output_dict=True)
model.load_state_dict(load_file(str(Path(export_dir) / "open_clip_model.safetensors")), strict=True)
model.train()
PARAMS = sum(p.numel() for p in model.parameters())
loss_fn = open_clip.ClipLoss()
opt = torch.optim.AdamW(model.parameters(), lr=float(sys.argv[4]), weight_decay=float(sys.argv[5]))
inputs = load_file(inputs_path)
images, tokens = inputs["images"][:, 0].contiguous(), inputs["tokens"][:, 0].contiguous()

def fwd_bwd():
    out = model(images, tokens)
    loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
    loss.backward()
    return loss

def step():
    opt.zero_grad(set_to_none=True)
    loss = fwd_bwd()
    opt.step()
    return loss.item()

serve(step, fwd_bwd, images.shape[0])
"""


def our_worker(variant: str, model_config: str, inputs_path: str, threads: int) -> None:
    """Worker for one of our variants: ``ItoModel`` + ``ItoObjective`` + AdamW on the shared batch."""
    from safetensors.torch import load_file

    from ito_core.distributed import DistEnv
    from ito_core.train import ItoObjective

    torch.set_num_threads(threads)
    cfg = load_config([f"model={model_config}", *VARIANTS[variant]])
    model = build_ours(cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    inputs = load_file(inputs_path)
    images_BMCHW = inputs["images"][:, : cfg.ito.images].contiguous()
    tokens_BNL = inputs["tokens"][:, : cfg.ito.texts].contiguous()
    objective = ItoObjective(cfg, DistEnv(0, 0, 1))

    def fwd_bwd() -> torch.Tensor:
        loss = objective(model(images_BMCHW, tokens_BNL))["loss"]
        loss.backward()
        return loss

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = fwd_bwd()
        opt.step()
        return loss.item()

    scope = {"PARAMS": sum(p.numel() for p in model.parameters())}
    exec(WORKER_LOOP, scope)  # the same loop as the peer's, so both are timed identically
    scope["serve"](step, fwd_bwd, images_BMCHW.shape[0])


def build_ours(cfg: RunConfig) -> ItoModel:
    torch.manual_seed(0)  # the CLIP baseline's initial weights are the ones exported to the peer
    return ItoModel(cfg.model, cfg.ito, cfg.loss)


def matmul_flops_per_s(threads: int, *, n: int = 1024, repeats: int = 20) -> float:
    """Best fp32 matmul FLOP/s at ``threads`` threads: the peak MFU is measured against."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = min(timed_matmul(a, b) for _ in range(repeats))
    return 2 * n**3 / best


def timed_matmul(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def write_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The shared batch (4 image views, 1 caption per sample) and the OpenCLIP export of the CLIP baseline."""
    from safetensors.torch import save_file

    from ito_core.export import export_open_clip

    cfg = load_config([f"model={args.model_config}", *VARIANTS[BASELINE]])
    size, batch = cfg.model.image_size, args.batch_size
    images = torch.randn(batch, 4, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokens = build_tokenizer(cfg.model.context_length)([CAPTIONS[i % len(CAPTIONS)] for i in range(batch)])
    save_file({"images": images, "tokens": tokens[:, None].contiguous()}, str(work / "inputs.safetensors"))
    model = build_ours(cfg)
    export_open_clip(model.encoder.state_dict(), cfg.model, work / "open_clip")
    return work / "inputs.safetensors", work / "open_clip"


def start_workers(args: argparse.Namespace, inputs: Path, export: Path) -> dict[str, Worker]:
    workers = {}
    if args.open_clip_python:
        workers[PEER] = Worker([args.open_clip_python, "-c", PEER_WORKER, str(export), str(inputs),
                                str(args.threads), str(LR), str(WEIGHT_DECAY)], threads=args.threads)
    for name in VARIANTS:
        workers[name] = Worker([sys.executable, __file__, "--worker", name, "--model-config", args.model_config,
                                "--inputs", str(inputs), "--threads", str(args.threads)], threads=args.threads)
    return workers


def summarize(args: argparse.Namespace, times: dict, extra: dict, peak: float) -> dict:
    """Per-model figures and the ratios the goals are stated in."""
    models = {}
    for name, ts in times.items():
        ito = load_config([f"model={args.model_config}", *VARIANTS.get(name, VARIANTS[BASELINE])])
        flops = train_flops_per_sample(ito.model, ito.ito)
        best, median = min(ts), statistics.median(ts)
        models[name] = {"params": extra[name]["params"], "step_s_best": best, "step_s_median": median,
                        "samples_per_s_best": args.batch_size / best, "samples_per_s_median": args.batch_size / median,
                        "train_gflop_per_sample": flops / 1e9,
                        "counted_train_gflop_per_sample": extra[name]["flops"] / 1e9,
                        "analytic_over_counted": flops / extra[name]["flops"],
                        "mfu_best": flops * args.batch_size / best / peak,
                        "mfu_median": flops * args.batch_size / median / peak,
                        "peak_rss_mb": extra[name]["peak_rss_mb"],
                        "step_rss_mb": extra[name]["peak_rss_mb"] - extra[name]["ready_rss_mb"],
                        "first_loss": extra[name]["first_loss"]}

    def ratio(num: str, den: str) -> dict:
        per_round = [a / b for a, b in zip(times[num], times[den], strict=True)]
        flop_ratio = models[num]["train_gflop_per_sample"] / models[den]["train_gflop_per_sample"]
        return {"best": min(times[num]) / min(times[den]), "median_per_round": statistics.median(per_round),
                "analytic_flop_ratio": flop_ratio}

    ratios = {"ITO M=2 fusion / CLIP baseline (step time; goal <= 1.9)": ratio("ITO M=2 fusion", BASELINE),
              "ITO M=4 fusion / CLIP baseline (step time)": ratio("ITO M=4 fusion", BASELINE),
              "ITO M=2 fusion / ITO M=2 no fusion (step time; goal <= 1.05)": ratio("ITO M=2 fusion",
                                                                                     "ITO M=2 no fusion")}
    if PEER in times:
        # samples/s ratio = inverse step-time ratio (same batch)
        r = ratio(PEER, BASELINE)
        ratios["CLIP baseline / OpenCLIP (samples/s; goal >= 1.3 on GPU)"] = r
        ratios["ITO M=2 fusion / OpenCLIP (step time)"] = ratio("ITO M=2 fusion", PEER)
    result = {"models": models, "ratios": ratios}
    if args.profile:
        ito = load_config([f"model={args.model_config}", *VARIANTS.get(args.profile, VARIANTS[BASELINE])])
        parts = forward_flops_per_sample(ito.model, ito.ito)
        result["profile"] = {"model": args.profile, **extra[args.profile]["profile"],
                             "flop_shares": {k: v / parts["total"] for k, v in parts.items() if k != "total"}}
    return result


def print_table(result: dict) -> None:
    print(f"\n{result['machine']}\n")
    print("| model | params | step ms best (median) | samples/s best (median) | vs CLIP step time | "
          "train GFLOP/sample (counted) | analytic / counted | MFU best (median) | peak RSS MB | step RSS MB | "
          "first loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = result["models"][BASELINE]
    for name, m in result["models"].items():
        print(f"| {name} | {m['params']:,} | {1e3 * m['step_s_best']:.1f} ({1e3 * m['step_s_median']:.1f}) | "
              f"{m['samples_per_s_best']:.1f} ({m['samples_per_s_median']:.1f}) | "
              f"{m['step_s_best'] / base['step_s_best']:.3f}x | "
              f"{m['train_gflop_per_sample']:.4g} ({m['counted_train_gflop_per_sample']:.4g}) | "
              f"{m['analytic_over_counted']:.4f} | "
              f"{100 * m['mfu_best']:.1f} % ({100 * m['mfu_median']:.1f} %) | {m['peak_rss_mb']:.0f} | "
              f"{m['step_rss_mb']:.0f} | {m['first_loss']:.4f} |")
    print("\n| ratio | best-of-N | median of per-round | analytic FLOP ratio |\n|---|---:|---:|---:|")
    for name, r in result["ratios"].items():
        print(f"| {name} | {r['best']:.3f} | {r['median_per_round']:.3f} | {r['analytic_flop_ratio']:.3f} |")
    if "profile" in result:
        prof = result["profile"]
        shares = ", ".join(f"{part} {100 * share:.1f} %" for part, share in prof["flop_shares"].items())
        print(f"\nProfile of one {prof['model']} step ({prof['total_ms']:.0f} ms of CPU time in ops; analytic "
              f"forward FLOPs: {shares})\n\n| op | self CPU ms | share | calls |\n|---|---:|---:|---:|")
        for row in prof["profile"]:
            print(f"| `{row['op']}` | {row['self_ms']:.1f} | {100 * row['share']:.1f} % | {row['calls']} |")


def time_rounds(workers: dict[str, Worker], args: argparse.Namespace) -> tuple[dict, dict]:
    times = {name: [] for name in workers}
    extra = {name: {"params": w.ready["params"]} for name, w in workers.items()}
    for r in range(args.warmup + args.rounds):
        for name, worker in workers.items():  # interleaved: every round times every model
            out = worker.ask("step")
            if r == 0:
                extra[name]["first_loss"] = out["loss"]
            if r >= args.warmup:
                times[name].append(out["t"])
        print(f"round {r + 1}/{args.warmup + args.rounds} done", file=sys.stderr, flush=True)
    for name, worker in workers.items():
        if name == args.profile:
            extra[name]["profile"] = worker.ask("profile")
        extra[name]["flops"] = worker.ask("flops")["flops"] * 1.0
        extra[name].update(worker.close("quit"))
    return times, extra


def run(args: argparse.Namespace) -> dict:
    peak_before = matmul_flops_per_s(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        inputs, export = write_inputs(args, Path(tmp))
        workers = start_workers(args, inputs, export)
        try:
            times, extra = time_rounds(workers, args)
        finally:
            for worker in workers.values():
                if worker.proc.poll() is None:
                    worker.proc.kill()
    peak = max(peak_before, matmul_flops_per_s(args.threads))
    result = summarize(args, times, extra, peak)
    cpu_lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpu_lines if ln.startswith("model name")), "?")
    load_after = os.getloadavg()
    result.update({
        "model_config": args.model_config, "batch_size": args.batch_size, "threads": args.threads,
        "rounds": args.rounds, "warmup": args.warmup, "precision": "fp32", "device": "cpu",
        "torch": torch.__version__, "matmul_peak_gflops": peak / 1e9,
        "loadavg_before": load_before, "loadavg_after": load_after, "step_times_s": times,
        "machine": (f"{cpu}, {os.cpu_count()} cores, {args.threads} threads, fp32, batch {args.batch_size}, "
                    f"{args.rounds} rounds after {args.warmup} warm-up; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s; "
                    f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"),
    })
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="tiny", help="configs/model/<name>.yaml")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (one step of every model each)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (allocator, optimizer state)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads per worker")
    parser.add_argument("--open-clip-python", help="python of a venv with open_clip_torch: time OpenCLIP too")
    parser.add_argument("--profile", metavar="MODEL", choices=[PEER, *VARIANTS],
                        help=f"after the rounds, torch.profiler's top ops of one step of MODEL: {[PEER, *VARIANTS]}")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.profile == PEER and not args.open_clip_python:
        parser.error("--profile of the OpenCLIP peer needs --open-clip-python")
    if args.worker:
        return our_worker(args.worker, args.model_config, args.inputs, args.threads)
    result = run(args)
    print_table(result)
    line = json.dumps(result)
    print("\n" + line)
    if args.json:
        args.json.write_text(line + "\n")
    return None


if __name__ == "__main__":
    main()
