"""Inference cost of a stripped ITO model vs a CLIP baseline of the same config: images/s and texts/s.

Stripping drops the fusion module, so the deployed model should be a plain CLIP dual encoder: same parameter count,
same throughput (within noise, about +-2%). Timings of the compared models are interleaved round by round, so a
neighbour process slowing the machine hurts every model alike, and the table shows the best round (noise only ever
adds time: best-of-N is timeit's statistic) with the median beside it.

    python bench/inference.py --model-config tiny                     # random ITO run, stripped, vs CLIP baseline
    python bench/inference.py --model outputs/runs/<ito>/model --baseline outputs/runs/<clip>/model
    python bench/inference.py --model-config vit_b_16 --device cuda --precision bf16 --batch-size 256
    ... --open-clip-python /tmp/ocvenv/bin/python                    # also time OpenCLIP's CLIP on the same export
    ... --json inference.json                                         # also write the figures as JSON

Without ``--baseline`` the baseline is a freshly built CLIP dual encoder (``ito=clip``: no fusion) of the same
model config. The OpenCLIP peer runs in its own interpreter after ours, so compare it with care. Captions have
CC3M-like lengths (`--captions full`: each fills the context); ours get them cut after the longest, as eval does,
OpenCLIP the whole context, as its own code does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captions import CAPTION_KINDS, make_captions  # noqa: E402
from common import describe, machine  # noqa: E402

from ito_core.config import ModelConfig, load_config  # noqa: E402
from ito_core.data.tokenizer import build_tokenizer, trim_padding  # noqa: E402
from ito_core.methods import build_model  # noqa: E402
from ito_core.model_folder import MODEL_CONFIG, load_stripped, write_model_folder  # noqa: E402
from ito_core.models.dual_encoder import DualEncoder, count_parameters  # noqa: E402
from ito_core.strip import encoder_state  # noqa: E402

QUICK_ARGS = ["--rounds", "5", "--threads", "1"]  # bench/all.py --quick; 1 thread: steadier on a busy machine

# Runs under the OpenCLIP venv's python: the same timing loop on open_clip.create_model("local-dir:DIR").
PEER_SCRIPT = r"""
import json, statistics, sys, time, torch, open_clip
from safetensors.torch import load_file
model_dir, inputs_path, rounds, device, precision, threads = sys.argv[1:7]
if int(threads):
    torch.set_num_threads(int(threads))
inputs = {k: v.to(device) for k, v in load_file(inputs_path).items()}
model = open_clip.create_model(f"local-dir:{model_dir}").to(device).eval()
amp = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if precision == "bf16" else None
def timed(fn, x):
    if device.startswith("cuda"): torch.cuda.synchronize()
    t = time.perf_counter(); fn(x)
    if device.startswith("cuda"): torch.cuda.synchronize()
    return time.perf_counter() - t
out = {"images": [], "texts": [], "params": sum(p.numel() for p in model.parameters())}
with torch.inference_mode(), (amp or torch.autocast("cpu", enabled=False)):
    for r in range(int(rounds) + 1):
        ti, tt = timed(model.encode_image, inputs["images"]), timed(model.encode_text, inputs["tokens"])
        if r:  # round 0 warms up
            out["images"].append(ti); out["texts"].append(tt)
print(json.dumps(out))
"""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn(x)
    synchronize(device)
    return time.perf_counter() - start


def model_config_of(model_dir: Path) -> ModelConfig:
    return ModelConfig(**json.loads((model_dir / MODEL_CONFIG).read_text())["model"])


def build_models(args: argparse.Namespace, work: Path) -> tuple[dict[str, DualEncoder], Path, ModelConfig]:
    """(name -> model, the ITO model folder, its config). ITO from a config: an ``ItoModel`` with its fusion
    module, stripped and written exactly as the strip stage does, then loaded back with ``load_stripped``."""
    ito_dir = Path(args.model) if args.model else work / "ito"
    if not args.model:
        cfg = load_config([f"model={args.model_config}", "ito=ito"])
        torch.manual_seed(0)
        trained = build_model(cfg)
        state = encoder_state(trained.state_dict())
        num_stripped = sum(v.numel() for v in state.values())
        print(f"ITO training model {count_parameters(trained):,} params -> stripped {num_stripped:,}")
        manifest = {"num_parameters": num_stripped, "dropped_parameters": count_parameters(trained) - num_stripped,
                    "steps": 0, "final_loss": None, "data_key": "-", "data_manifest_sha256": "-",
                    "source_checkpoint": "-"}
        write_model_folder(state, cfg, ito_dir, manifest)
    model_cfg = model_config_of(ito_dir)
    torch.manual_seed(1)
    baseline = load_stripped(Path(args.baseline)) if args.baseline else DualEncoder(model_cfg).eval()
    return {"ITO stripped": load_stripped(ito_dir), "CLIP baseline": baseline}, ito_dir, model_cfg


def bench(models: dict[str, DualEncoder], images: torch.Tensor, tokens: torch.Tensor, args: argparse.Namespace,
          device: torch.device) -> dict[str, dict[str, list[float]]]:
    amp = torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else nullcontext()
    times = {name: {"images": [], "texts": []} for name in models}
    with torch.inference_mode(), amp:
        for r in range(args.rounds + 1):
            for name, model in models.items():  # interleaved: every round times every model
                ti, tt = timed(model.encode_image, images, device), timed(model.encode_text, tokens, device)
                if r:  # round 0 warms up (allocator, kernels, caches)
                    times[name]["images"].append(ti)
                    times[name]["texts"].append(tt)
    return times


def run_peer(args: argparse.Namespace, ito_dir: Path, images: torch.Tensor, tokens: torch.Tensor,
             work: Path) -> dict:
    from safetensors.torch import save_file

    save_file({"images": images.cpu(), "tokens": tokens.cpu()}, str(work / "inputs.safetensors"))
    proc = subprocess.run([args.open_clip_python, "-c", PEER_SCRIPT, str(ito_dir), str(work / "inputs.safetensors"),
                           str(args.rounds), args.device, args.precision, str(args.threads)],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"OpenCLIP peer failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarize(args: argparse.Namespace, times: dict[str, dict[str, list[float]]], params: dict[str, int]) -> dict:
    models = {}
    for name, kinds in times.items():
        models[name] = {"params": params[name], **{f"{k}_per_s_best": args.batch_size / min(kinds[k])
                                                   for k in ("images", "texts")},
                        **{f"{k}_per_s_median": args.batch_size / statistics.median(kinds[k])
                           for k in ("images", "texts")}, "times_s": kinds}
    threads = f", {torch.get_num_threads()} threads" if args.device == "cpu" else ""
    return {"machine": machine(), "setup": f"device {args.device}{threads}, {args.precision}, batch {args.batch_size}, "
            f"{args.rounds} rounds", "models": models}


def print_table(result: dict) -> None:
    print(f"\n{describe(result['machine'])}; {result['setup']}: best (median) per second\n")
    print("| model | params | images/s | texts/s | best vs CLIP baseline (img, txt) |\n|---|---:|---:|---:|---:|")
    base = result["models"]["CLIP baseline"]
    for name, m in result["models"].items():
        img, txt = (f"{m[f'{k}_per_s_best']:.1f} ({m[f'{k}_per_s_median']:.1f})" for k in ("images", "texts"))
        ratio = (f"{m['images_per_s_best'] / base['images_per_s_best']:.3f}x, "
                 f"{m['texts_per_s_best'] / base['texts_per_s_best']:.3f}x")
        print(f"| {name} | {m['params']:,} | {img} | {txt} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="stripped ITO model folder (default: build one from --model-config)")
    parser.add_argument("--baseline", help="stripped CLIP baseline folder (default: a CLIP dual encoder, same config)")
    parser.add_argument("--model-config", default="tiny", help="configs/model/<name>.yaml when --model is not given")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds per model (after one warm-up round)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch's default)")
    parser.add_argument("--captions", choices=CAPTION_KINDS, default="cc3m",
                        help="caption lengths: CC3M-like, or every caption filling the context")
    parser.add_argument("--open-clip-python", help="python of a venv with open_clip_torch: also time OpenCLIP's CLIP")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        models, ito_dir, model_cfg = build_models(args, Path(tmp))
        size = model_cfg.image_size
        images = torch.randn(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        captions = make_captions(args.captions, args.batch_size, model_cfg.context_length)
        tokens = build_tokenizer(model_cfg.context_length)(captions)  # OpenCLIP runs the whole context
        models = {name: model.to(device).eval() for name, model in models.items()}
        times = bench(models, images, trim_padding(tokens).to(device), args, device)  # ours: as eval cuts it
        params = {name: count_parameters(model) for name, model in models.items()}
        if args.open_clip_python:
            peer = run_peer(args, ito_dir, images, tokens, Path(tmp))
            times["OpenCLIP CLIP (peer)"], params["OpenCLIP CLIP (peer)"] = peer, peer["params"]
    result = summarize(args, times, params)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
