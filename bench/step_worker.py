"""bench/train_step.py's worker processes: the one timing loop both sides run (ours and OpenCLIP's), sent to the
worker as source text. ``PEER_WORKER`` runs under the OpenCLIP venv's python, so this file imports nothing."""

# Worker side, shared by both workers (it imports only torch and the standard library: the peer's venv has no
# ito_core). Protocol (stdin -> stdout, one JSON line per command): "step" -> {"t", "loss"[, "peak_gpu_mb"]};
# "flops" -> torch's FlopCounterMode count of one fwd+bwd per sample; "profile" -> torch.profiler's op table of one
# step; "max_batch" -> the largest micro-batch that fits (CUDA); "quit" -> RSS figures.
WORKER_LOOP = r"""
import contextlib, json, resource, sys, time
import torch

PROFILE_ROWS = 12
MAX_BATCH_LIMIT = 1 << 16  # "max_batch" stops doubling here even without an OOM ("capped")


def _rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024


def _device_name(device):
    if device == "cuda":
        return torch.cuda.get_device_name()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def serve(model, loss_of, batch, settings, *, text_tokens):
    # model: the eager module on settings["device"]; loss_of(fn, *batch) -> loss; batch: tensors, dim 0 = samples.
    # One step function for every device: the device only adds synchronisation and the GPU memory counters.
    device, cuda = settings["device"], settings["device"] == "cuda"
    fused = {"fused": True} if settings["fused_adamw"] else {}
    opt = torch.optim.AdamW(model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"], **fused)
    fn = torch.compile(model) if settings["compile"] else model  # compiled on the first (warm-up) step

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def fwd_bwd(fn, batch):
        bf16 = settings["precision"] == "bf16"
        with torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_of(fn, *batch)
        loss.backward()
        return loss

    def step(batch):
        opt.zero_grad(set_to_none=True)
        loss = fwd_bwd(fn, batch)
        opt.step()
        return loss

    def timed_step(batch):
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync(); t = time.perf_counter(); loss = step(batch); sync(); t = time.perf_counter() - t
        out = {"t": t, "loss": loss.item()}
        if cuda:
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        return out

    def max_batch():
        # double the micro-batch (the batch repeated) until a step runs out of GPU memory
        tries, size = [], len(batch[0])
        while size <= MAX_BATCH_LIMIT:
            out = None
            try:
                big = tuple(x.repeat(size // len(x), *[1] * (x.dim() - 1)) for x in batch)
                out = [timed_step(big) for _ in range(2)][-1]  # the 2nd: allocator settled, compiled for the shape
            except torch.cuda.OutOfMemoryError:
                pass
            big = None
            opt.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            tries.append({"batch": size, "fits": out is not None, **(out or {})})
            if out is None:
                break
            size *= 2
        return {"max_batch": max((t["batch"] for t in tries if t["fits"]), default=0), "tries": tries,
                "capped": all(t["fits"] for t in tries)}

    ready = {"ready": True, "params": sum(p.numel() for p in model.parameters()), "text_tokens": text_tokens,
             "device_name": _device_name(device), "torch": torch.__version__, "ready_rss_mb": _rss_mb()}
    if cuda:
        ready["ready_gpu_mb"] = torch.cuda.memory_allocated() / 2**20
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "step":
            answer = timed_step(batch)
        elif cmd == "flops":
            from torch.nn.attention import SDPBackend, sdpa_kernel
            from torch.utils.flop_counter import FlopCounterMode
            counter = FlopCounterMode(display=False)
            with sdpa_kernel(SDPBackend.MATH), counter:  # flash attention has no FLOP formula on CPU
                fwd_bwd(model, batch)  # the eager model: FlopCounterMode counts what dispatches
            answer = {"flops": counter.get_total_flops() / len(batch[0])}
        elif cmd == "profile":
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
                step(batch); sync()
            key = "self_device_time_total" if cuda else "self_cpu_time_total"
            averages = prof.key_averages()
            total = sum(getattr(e, key) for e in averages)
            top = sorted(averages, key=lambda e: -getattr(e, key))[:PROFILE_ROWS]
            rows = [{"op": e.key, "self_ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total,
                     "calls": e.count} for e in top]
            answer = {"profile": rows, "total_ms": total / 1e3, "clock": "GPU" if cuda else "CPU"}
        elif cmd == "max_batch":
            answer = max_batch()
        elif cmd == "quit":
            print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
            return
        else:
            answer = {"error": f"unknown command {cmd!r}"}
        print(json.dumps(answer), flush=True)
"""

# Runs under the OpenCLIP venv's python; imports no ito_core.
PEER_WORKER = WORKER_LOOP + r"""
import tempfile, open_clip
from pathlib import Path
from safetensors.torch import load_file
settings = json.loads(sys.argv[1])
torch.set_num_threads(settings["threads"])
config = json.loads((Path(settings["export"]) / "open_clip_config.json").read_text())
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / "ito-bench.json").write_text(json.dumps(config["model_cfg"]))
    open_clip.add_model_config(Path(tmp) / "ito-bench.json")
model = open_clip.create_model("ito-bench", pretrained=None, output_dict=True)
model.load_state_dict(load_file(str(Path(settings["export"]) / "open_clip_model.safetensors")), strict=True)
model.to(settings["device"]).train()
loss_fn = open_clip.ClipLoss()
inputs = load_file(settings["inputs"])
# the full context: OpenCLIP's loader pads every caption to it
batch = tuple(x[:, 0].contiguous().to(settings["device"]) for x in (inputs["images"], inputs["tokens"]))

def loss_of(fn, images, tokens):
    out = fn(images, tokens)
    return loss_fn(out["image_features"], out["text_features"], out["logit_scale"])

serve(model, loss_of, batch, settings, text_tokens=batch[1].shape[-1])
"""
