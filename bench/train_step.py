"""Training-step cost: OpenCLIP vs our CLIP baseline vs ITO (M=2 with and without fusion, M=4), same model config.

One step = forward, loss, backward, AdamW step, timed with ``perf_counter`` around the whole step (with
``torch.cuda.synchronize()`` before and after on ``--device cuda``). It is a plain PyTorch step with
``torch.optim.AdamW`` (same hyper-parameters for every model; each side's own implementation choice: ours fused, as
``ito_core.train.build_optimizer``; OpenCLIP's default, as its ``main.py``), not the DeepSpeed engine that
``ito_core.train`` uses, so engine overhead (ZeRO bookkeeping, gradient clipping, the all-rank finite check) is not
in these numbers.
Every model runs in its own worker process (ours under this python, OpenCLIP's under ``--open-clip-python``), with
the same device, precision (``bf16``: ``torch.autocast`` around forward + loss) and ``--compile`` setting.

On CPU the orchestrator drives the workers round by round: every round times one step of every model, one at a
time, so a neighbour process slowing the machine hurts all models alike; memory is each worker's RSS. On CUDA the
models run one after the other, each alone on the GPU (as in training: its peak memory and largest micro-batch are
its own); memory is ``torch.cuda.max_memory_allocated()``, reset every step. Tables show the best round (noise only
ever adds time) and the median; ratios are also given as the median of per-round ratios.

    python bench/train_step.py --model-config tiny --batch-size 64 --open-clip-python /tmp/ocvenv/bin/python
    python bench/train_step.py --model-config vit_b_16 --device cuda --precision bf16 --compile --peak-tflops 989 \
        --batch-size 64 --find-max-batch --open-clip-python ...

Captions: ``--captions cc3m`` (default) draws them from a fixed, seeded generator whose word counts follow a
CC3M-like distribution (5-30 words, mean ~10.3: Sharma et al. 2018), ``full`` fills the whole context (the worst
case). Our models get the token matrix cut by ``ito_core.data.tokenizer.trim_padding``, exactly as our training
loader gives it; OpenCLIP gets the full context, as its own loader does.

OpenCLIP's model is built with ``open_clip.create_model(name, pretrained=None)`` from the model config that
``ito_core.export.open_clip_model_config`` writes for our config, and loaded (strict) with our CLIP baseline's
initial weights through ``OpenClipStateDictAdapter``; its loss is ``open_clip.ClipLoss``. Same batch (view 0 of
the images, caption 0), same thread count. MFU = analytic model FLOPs at the text tokens each model runs (ours:
``ito_core.flops.train_flops_per_sample``; the peer: the same with ``one_row_last_blocks=False``) x samples/s
/ the peak: ``--peak-tflops`` (required on CUDA), else the best matmul FLOP/s (in the step's precision) this script
measures at the same thread count, before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captions import CAPTION_KINDS, make_captions  # noqa: E402
from common import Worker, machine  # noqa: E402
from step_report import BASELINE, PEER, VARIANT_SETS, VARIANTS, print_table, summarize  # noqa: E402
from step_worker import PEER_WORKER, WORKER_LOOP  # noqa: E402

from ito_core.config import RunConfig, load_config  # noqa: E402
from ito_core.data.tokenizer import build_tokenizer  # noqa: E402
from ito_core.methods import build_model  # noqa: E402

QUICK_ARGS = ["--rounds", "3", "--warmup", "1", "--threads", "1"]  # bench/all.py --quick
LR, WEIGHT_DECAY = 1e-4, 0.1


def worker_settings(args: argparse.Namespace, *, fused_adamw: bool) -> dict:
    return {"device": args.device, "precision": args.precision, "compile": args.compile, "threads": args.threads,
            "lr": LR, "weight_decay": WEIGHT_DECAY, "fused_adamw": fused_adamw}


def our_worker(args: argparse.Namespace) -> None:
    """Worker for one of our variants: its method's training model + objective + AdamW on the shared batch, its
    captions cut by ``trim_padding`` as our training loader cuts them."""
    from safetensors.torch import load_file

    from ito_core.data.tokenizer import trim_padding
    from ito_core.methods import build_objective

    torch.set_num_threads(args.threads)
    cfg = load_config([f"model={args.model_config}", *VARIANTS[args.worker]])
    model = build_ours(cfg).to(args.device).train()
    inputs = load_file(args.inputs)
    images_BMCHW = inputs["images"][:, : cfg.ito.images].contiguous()
    tokens_BNL = trim_padding(inputs["tokens"][:, : cfg.ito.texts]).contiguous()  # on the CPU batch, as the loader
    objective = build_objective(cfg, model, rank=0, world_size=1).to(args.device)

    def loss_of(fn: torch.nn.Module, images_BMCHW: torch.Tensor, tokens_BNL: torch.Tensor) -> torch.Tensor:
        return objective(fn(images_BMCHW, tokens_BNL))["loss"]

    scope: dict = {}
    exec(WORKER_LOOP, scope)  # the same loop as the peer's, so both are timed identically
    batch = (images_BMCHW.to(args.device), tokens_BNL.to(args.device))
    settings = worker_settings(args, fused_adamw=True)
    scope["serve"](model, loss_of, batch, settings, text_tokens=tokens_BNL.shape[-1])


def build_ours(cfg: RunConfig) -> torch.nn.Module:
    torch.manual_seed(0)  # the CLIP baseline's initial weights are the ones exported to the peer
    return build_model(cfg)


def matmul_flops_per_s(threads: int, *, dtype: torch.dtype = torch.float32, n: int = 1024,
                       repeats: int = 20) -> float:
    """Best CPU matmul FLOP/s in ``dtype`` at ``threads`` threads: the peak MFU is measured against."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(timed_matmul(a, b) for _ in range(repeats))
    return 2 * n**3 / best


def timed_matmul(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    a @ b
    return time.perf_counter() - start


def write_inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    """The shared batch (4 image views, 4 captions per sample, full context: each model takes the first
    ``ito.images`` / ``ito.texts``) and the OpenCLIP export of the CLIP baseline."""
    from safetensors.torch import save_file

    from ito_core.export import export_open_clip

    cfg = load_config([f"model={args.model_config}", *VARIANTS[BASELINE]])
    size, batch = cfg.model.image_size, args.batch_size
    images = torch.randn(batch, 4, 3, size, size, generator=torch.Generator().manual_seed(0))
    captions = make_captions(args.captions, 4 * batch, cfg.model.context_length)
    tokens = build_tokenizer(cfg.model.context_length)(captions).view(batch, 4, -1)
    save_file({"images": images, "tokens": tokens.contiguous()}, str(work / "inputs.safetensors"))
    model = build_ours(cfg)
    export_open_clip(model.encoder.state_dict(), cfg.model, work / "open_clip")
    return work / "inputs.safetensors", work / "open_clip"


def start_worker(name: str, args: argparse.Namespace, inputs: Path, export: Path) -> Worker:
    if name == PEER:
        settings = {**worker_settings(args, fused_adamw=False), "export": str(export), "inputs": str(inputs)}
        return Worker([args.open_clip_python, "-c", PEER_WORKER, json.dumps(settings)], threads=args.threads)
    argv = [sys.executable, __file__, "--worker", name, "--model-config", args.model_config, "--inputs", str(inputs),
            "--threads", str(args.threads), "--device", args.device, "--precision", args.precision]
    return Worker(argv + ["--compile"] * args.compile, threads=args.threads)


def time_rounds(args: argparse.Namespace, inputs: Path, export: Path) -> tuple[dict, dict]:
    """On CPU every round times one step of every model (interleaved); on CUDA each model runs alone on the GPU,
    one after the other (its memory is its own). The workers of a group are ended before the next group starts."""
    names = ([PEER] if args.open_clip_python else []) + VARIANT_SETS[args.variants]
    groups = [names] if args.device == "cpu" else [[name] for name in names]
    times = {name: [] for name in names}
    extra = {name: {"peak_gpu_mb": []} for name in names}
    for group in groups:
        workers = {}
        try:
            for name in group:
                workers[name] = start_worker(name, args, inputs, export)
                extra[name].update(workers[name].ready)
            for r in range(args.warmup + args.rounds):
                for name, worker in workers.items():  # interleaved: every round times every model of the group
                    out = worker.ask("step")
                    if r == 0:
                        extra[name]["first_loss"] = out["loss"]
                    if r >= args.warmup:
                        times[name].append(out["t"])
                        extra[name]["peak_gpu_mb"].append(out.get("peak_gpu_mb"))
                print(f"{', '.join(group) if len(groups) > 1 else 'round'} {r + 1}/{args.warmup + args.rounds} "
                      "done", file=sys.stderr, flush=True)
            for name, worker in workers.items():
                if name == args.profile:
                    extra[name]["profile"] = worker.ask("profile")
                extra[name]["flops"] = worker.ask("flops")["flops"] * 1.0
                if args.find_max_batch:
                    extra[name]["max_batch"] = worker.ask("max_batch")
                extra[name].update(worker.close("quit"))
        finally:
            for worker in workers.values():
                if worker.proc.poll() is None:
                    worker.proc.kill()
    return times, extra


def mfu_peak(args: argparse.Namespace) -> tuple[float, str]:
    """The peak FLOP/s MFU is stated against, and how it was obtained."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12, f"peak {args.peak_tflops:g} TFLOP/s (--peak-tflops)"
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = matmul_flops_per_s(args.threads, dtype=dtype)
    return peak, f"{args.precision} matmul peak {peak / 1e9:.1f} GFLOP/s (measured)"


def run(args: argparse.Namespace) -> dict:
    peak, peak_note = mfu_peak(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        inputs, export = write_inputs(args, Path(tmp))
        times, extra = time_rounds(args, inputs, export)
    if not args.peak_tflops:  # measured before and after the rounds: the better of the two
        peak = max(peak, mfu_peak(args)[0])
        peak_note = f"{args.precision} matmul peak {peak / 1e9:.1f} GFLOP/s (measured)"
    result = summarize(args, times, extra, peak)
    load_after = os.getloadavg()
    host = machine()
    device_name = extra[BASELINE]["device_name"]
    text = {name: m["text_tokens"] for name, m in result["models"].items()}
    threads = f"{args.threads} thread{'s' * (args.threads != 1)}"
    where = (f"{device_name} (host {host['cpu']}, {host['cores']} cores, {threads})" if args.device == "cuda"
             else f"{host['cpu']}, {host['cores']} cores, {threads}")
    peer_torch = f", OpenCLIP's {extra[PEER]['torch']}" if PEER in extra else ""
    tokens_note = (f"text tokens run: ours {text[BASELINE]} (trim_padding)"
                   + (f", OpenCLIP {text[PEER]}" if PEER in text else ""))
    result.update({
        "model_config": args.model_config, "batch_size": args.batch_size, "threads": args.threads,
        "rounds": args.rounds, "warmup": args.warmup, "precision": args.precision, "device": args.device,
        "device_name": device_name, "compile": args.compile, "captions": args.captions,
        "torch": torch.__version__, "peak_flops": peak, "peak_source": peak_note,
        "matmul_peak_gflops": None if args.peak_tflops else peak / 1e9,
        "cpu": host["cpu"], "cores": host["cores"],
        "loadavg_before": load_before, "loadavg_after": load_after, "step_times_s": times,
        "machine": (f"{where}, torch {torch.__version__}{peer_torch}; {args.precision}"
                    f"{', torch.compile' if args.compile else ''}, batch {args.batch_size}, captions {args.captions} "
                    f"({tokens_note}); {args.rounds} rounds after {args.warmup} warm-up"
                    f"{' (warm-up includes compilation)' if args.compile else ''}; MFU against {peak_note}; "
                    f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"),
    })
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="tiny", help="configs/model/<name>.yaml")
    parser.add_argument("--variants", choices=sorted(VARIANT_SETS), default="ito",
                        help="models timed together: ito (CLIP vs ITO M=2/4, with and without fusion), fusion "
                             "(ito.fusion_image_tokens all/pool4/cls), methods (CLIP, SigLIP, SLIP, FLAIR, OneR, "
                             "ITO) or views (ITO cls with ito.patch_dropout / a 112 px ito.second_view_size: a "
                             "model of >= 112 px, e.g. vit_b_16)")
    parser.add_argument("--batch-size", type=int, default=64, help="micro-batch of every model")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (one step of every model each)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed rounds first (allocator, optimizer state; compilation with --compile)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads per worker")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="bf16: torch.autocast(bfloat16) around forward + loss (weights and AdamW stay fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model before the warm-up")
    parser.add_argument("--peak-tflops", type=float,
                        help="the device's peak TFLOP/s in --precision for MFU (required on cuda; e.g. 989 for an "
                             "H100 SXM in bf16, dense); on CPU the default is the matmul peak measured here")
    parser.add_argument("--find-max-batch", action="store_true",
                        help="cuda: after the rounds, double each model's micro-batch from --batch-size until it "
                             "runs out of GPU memory; report the largest that fit")
    parser.add_argument("--captions", choices=CAPTION_KINDS, default="cc3m",
                        help="cc3m: CC3M-like caption lengths (5-30 words, mean ~10.3); full: every caption fills "
                             "the context (the worst case)")
    parser.add_argument("--open-clip-python", help="python of a venv with open_clip_torch: time OpenCLIP too")
    parser.add_argument("--profile", metavar="MODEL", choices=[PEER, *VARIANTS],
                        help=f"after the rounds, torch.profiler's top ops of one step of MODEL: {[PEER, *VARIANTS]}")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--inputs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile == PEER and not args.open_clip_python:
        parser.error("--profile of the OpenCLIP peer needs --open-clip-python")
    if args.batch_size < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("--batch-size and --rounds must be >= 1, --warmup >= 0")
    if args.compile and args.warmup < 1:
        parser.error("--compile needs --warmup >= 1: the first step compiles, and must not be timed")
    if args.find_max_batch and args.device != "cuda":
        parser.error("--find-max-batch needs --device cuda (with --peak-tflops): only a GPU runs out of memory "
                     "at a fixed size; on CPU the batch would grow until the machine swaps")
    if args.device == "cuda" and not args.peak_tflops:
        parser.error("--device cuda needs --peak-tflops: the GPU's peak TFLOP/s in --precision for MFU (e.g. "
                     "--peak-tflops 989 for an H100 SXM in bf16, dense)")
    if args.device == "cuda" and not args.worker and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here (torch "
                     f"{torch.__version__}); run on a GPU machine with a CUDA build of torch, or use --device cpu")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        return our_worker(args)
    result = run(args)
    print_table(result)
    line = json.dumps(result)
    print("\n" + line)
    if args.json:
        args.json.write_text(line + "\n")
    return None


if __name__ == "__main__":
    main()
