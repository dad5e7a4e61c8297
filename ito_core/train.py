"""The ITO training loop on a DeepSpeed engine (ZeRO 0-3, fp32/bf16/fp16, CPU gloo or GPU NCCL).

One call of ``train`` is one rank of one run. Every stateful piece is restored on resume:
weights, optimizer, scheduler and step live in the DeepSpeed checkpoint; the data position
(``TrainState.data``: the next batch and the world size) is the number of consumed batches, since
the stream is deterministic (``ito_core.data.loader``); augmentation randomness is
re-seeded from (seed, rank, step) each step, so it needs no saved state. An interrupted and
resumed run therefore equals an uninterrupted one, bitwise on CPU. A run may resume at another
world size (same global batch): ZeRO shards are converted to a universal checkpoint on the fly.

One step: the rank's batch is augmented at once, split into ``accumulation_steps`` micro-batches
and run through :class:`GradientAccumulation` (exact for the contrastive losses). A NaN/inf loss
on any rank skips the update on every rank before any gradient exists (``train.nonfinite=skip``,
up to ``train.max_skipped_steps``) or stops the run (``stop``); so do non-finite gradients, which
DeepSpeed's ZeRO optimizers refuse to apply. Non-finite weights are never checkpointed.

Switches: ``deepspeed.precision`` fp32 | bf16 | fp16 (fp16 needs a GPU: DeepSpeed's CPU
accelerator has none); ``train.activation_checkpointing`` (same parameter names, bitwise the same
step on CPU); ``train.compile`` (``engine.compile()``, i.e. torch.compile with inductor: on CPU it
needs g++, the first step compiles C++ kernels for minutes on 2 cores (seconds with a warm
``/tmp/torchinductor_$USER`` cache), and results are close to eager but not bitwise equal).

Shape legend: B samples per rank, M image views, N captions, C/H/W pixels, L tokens.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ito_core import checkpoint
from ito_core.accumulation import GradientAccumulation
from ito_core.activation_checkpointing import apply_activation_checkpointing
from ito_core.artifacts import RunLayout
from ito_core.config import RunConfig, accumulation_steps, as_dict, config_warnings
from ito_core.data.loader import TrainStream, build_train_loader, resume_batch
from ito_core.data.tokenizer import build_tokenizer
from ito_core.distributed import DistEnv, all_ranks, init_distributed
from ito_core.flops import mfu, peak_flops, train_flops_per_sample
from ito_core.methods import build_augment, build_model, build_objective
from ito_core.storage import ArtifactStore, commit
from ito_core.tracking import Tracker
from ito_core.train_state import TrainState

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def deepspeed_config(cfg: RunConfig, world_size: int, *, load_universal: bool = False) -> dict[str, Any]:
    accum = accumulation_steps(cfg.train, world_size)
    precision = cfg.deepspeed.precision
    return {
        "train_batch_size": cfg.train.batch_size,
        "train_micro_batch_size_per_gpu": cfg.train.batch_size // world_size // accum,
        "gradient_accumulation_steps": accum,
        "gradient_clipping": cfg.train.grad_clip,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},  # dynamic loss scaling with DeepSpeed's defaults
        "checkpoint": {"load_universal": load_universal},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def check_precision(precision: str) -> None:
    """Fail early, naming the key, when the accelerator cannot train in ``precision``."""
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    ok = {"fp32": True, "bf16": acc.is_bf16_supported(), "fp16": acc.is_fp16_supported()}[precision]
    if not ok:
        raise ValueError(f"config deepspeed.precision: {precision!r} is not supported by DeepSpeed's "
                         f"{acc.device_name()!r} accelerator; use fp32 or bf16 there (fp16 needs a GPU)")


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on gains, biases, embeddings' scalars and the logit scale (as CLIP)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "logit_" in name else decay).append(param)
    tr = cfg.train
    groups = [{"params": decay, "weight_decay": tr.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for the whole update (CPU and CUDA); the per-tensor loop costs ~7x more on CPU, where it
    # was 10 % of a ViT-S/32 ITO step (bench/train_step.py --profile).
    return torch.optim.AdamW(groups, lr=tr.lr, betas=(tr.beta1, tr.beta2), eps=tr.eps, fused=True)


def cosine_with_warmup(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63)


def build_engine(cfg: RunConfig, env: DistEnv, *, load_universal: bool = False) -> Any:
    """The DeepSpeed engine around the method's training model, its AdamW and cosine schedule, with the model
    switches."""
    import deepspeed

    check_precision(cfg.deepspeed.precision)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(cfg)
    if cfg.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, warmup=cfg.train.warmup_steps, total=cfg.train.steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, env.world_size, load_universal=load_universal))
    if cfg.train.compile:
        engine.compile()  # torch.compile in place: parameter names and checkpoints are unchanged
    return engine


def train(cfg: RunConfig, *, shard_paths: list[str], shard_samples: list[int], store: ArtifactStore, run_key: str,
          staging: Path, scratch: Path | None = None) -> dict[str, Any]:
    """Train (or resume) one run; rank 0 commits ``<run_key>/train`` (its summary) at the end.

    ``shard_samples``: each shard's sample count (the prep manifest's), which fixes the data order.
    ``staging``: this node's folder for files kept beside the run (W&B's offline run); ``scratch``: node-local
    folder for checkpoints on their way to and from a remote store (default: ``staging``)."""
    scratch = scratch or staging
    env, run, total = init_distributed(), RunLayout(run_key), cfg.train.steps
    check_world_size(cfg, env)
    ckpt_key = run.checkpoints
    resume = checkpoint.find_resume_point(store, ckpt_key, world_size=env.world_size,
                                          zero_stage=cfg.deepspeed.zero_stage)
    engine = build_engine(cfg, env, load_universal=resume is not None and resume.universal)
    state = TrainState()
    if resume is not None:
        state = TrainState.from_state_dict(checkpoint.restore(engine, resume, store=store, key=ckpt_key,
                                                              staging=scratch))
    if env.rank == 0:  # start-up is over (bench/orchestration.py times the phases by these log lines)
        log.info("engine ready: ZeRO-%d %s, world size %d, at step %d", cfg.deepspeed.zero_stage,
                 cfg.deepspeed.precision, env.world_size, state.step)
        for warning in config_warnings(cfg):
            log.warning("%s", warning)
    device, dtype = engine.device, DTYPES[cfg.deepspeed.precision]
    objective = build_objective(cfg, engine.module, rank=env.rank, world_size=env.world_size)
    accum = GradientAccumulation(engine, objective, steps=accumulation_steps(cfg.train, env.world_size))
    augment = build_augment(cfg).to(device)
    stream = TrainStream(
        shard_paths, batch_size=cfg.train.batch_size // env.world_size, num_texts=cfg.ito.texts,
        tokenizer=build_tokenizer(cfg.model.context_length), seed=cfg.seed, rank=env.rank,
        world_size=env.world_size, shard_samples=shard_samples, max_bad_shards=cfg.train.max_bad_shards,
        start_batch=resume_batch(state.data, step=state.step, world_size=env.world_size))
    tracker = Tracker(cfg, run_key=run_key, rank=env.rank, directory=staging / "wandb")
    tracker.catch_up(state.history)  # a resumed run: the rows W&B lost with the killed job
    meter = StepMeter(cfg, env, start_step=state.step)
    loader = build_train_loader(stream, num_workers=cfg.data.num_workers)
    saver = checkpoint.CheckpointSaver(engine, store=store, key=ckpt_key, staging=scratch,
                                       keep=cfg.train.keep_checkpoints, asynchronous=cfg.train.async_checkpoint)
    batches = iter(loader)
    for step in range(state.step, total):
        batch = next(batches)
        torch.manual_seed(step_seed(cfg.seed, env.rank, step))
        # Pinned batches (the loader pins them on CUDA) copy without blocking the host.
        images_BMCHW = augment(batch["images"].to(device, non_blocking=True)).to(dtype)
        texts_BNL = batch["texts"].to(device, non_blocking=True)
        losses = accum.forward(images_BMCHW, texts_BNL)  # loss of the whole batch, no update yet
        meter.count(text_tokens=texts_BNL.shape[-1])
        if (problem := try_update(accum, losses, precision=cfg.deepspeed.precision)) is not None:
            skip_or_stop(state, losses=losses, cfg=cfg, problem=problem, checkpoints=store.url(ckpt_key))
        state.step = step + 1
        if state.step % cfg.train.log_every == 0 or state.step == total:
            state.history.append(meter.row(state, losses, lr=engine.get_lr()[0]))
            tracker.log(state.history[-1])
        saver.poll()  # commits the tag uploading in the background once every node's upload ended
        if state.step % cfg.train.checkpoint_every == 0 or state.step == total:
            state.data = loader.state_dict()
            saver.save(step=state.step, train_state=state.state_dict())
    saver.finish()  # the last checkpoint is committed before the run reports success
    summary = {"step": state.step, "checkpoint": checkpoint.tag_for(state.step),
               "history": state.history, "config": as_dict(cfg),
               "checkpoint_held_s": {tag: round(s, 3) for tag, s in saver.held_s.items()}}
    if env.rank == 0:
        commit(store, run.train, summary)
    tracker.finish()
    return summary


def check_world_size(cfg: RunConfig, env: DistEnv) -> None:
    """Stop unless the process group is the one the config asks for: a job whose ranks formed other groups
    (an inherited RANK, a launcher started differently) would train several runs on the same checkpoints."""
    expected = cfg.cluster.nodes * cfg.cluster.tasks_per_node
    if env.world_size != expected:
        raise ValueError(
            f"config cluster.nodes x cluster.tasks_per_node = {cfg.cluster.nodes} x {cfg.cluster.tasks_per_node} "
            f"= {expected} ranks, but this process joined a group of world size {env.world_size} (rank "
            f"{env.rank}, from RANK/WORLD_SIZE of its launcher); launch {expected} ranks, or set cluster.nodes "
            "and cluster.tasks_per_node to what the launcher starts")


def try_update(accum: GradientAccumulation, losses: dict[str, torch.Tensor], *, precision: str) -> str | None:
    """Backward and optimizer step, unless the loss is not finite on some rank: then no rank updates.
    Return what prevented the update, or None."""
    if not all_ranks(bool(torch.isfinite(losses["loss"].detach()).all()), losses["loss"].device):
        accum.skip()
        return "non-finite loss"
    if not accum.backward() and precision != "fp16":  # in fp16 a skipped overflow is the loss scaler's routine
        return "non-finite gradients (DeepSpeed skipped the update)"
    return None


def skip_or_stop(state: TrainState, *, losses: dict[str, torch.Tensor], cfg: RunConfig, problem: str,
                 checkpoints: str) -> None:
    """Count a skipped step; raise ``FloatingPointError`` under ``stop`` or past ``train.max_skipped_steps``."""
    state.skipped_steps += 1
    tr, step = cfg.train, state.step + 1
    what = f"{problem} at step {step} ({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())})"
    kept = (f"the committed checkpoints under {checkpoints} are untouched: resume from the newest, e.g. with a "
            "lower train.lr, a tighter train.grad_clip or deepspeed.precision=fp32")
    if tr.nonfinite == "stop":
        raise FloatingPointError(f"{what} with train.nonfinite=stop; {kept}")
    if state.skipped_steps > tr.max_skipped_steps:
        raise FloatingPointError(f"{what}: {state.skipped_steps} steps skipped, more than "
                                 f"train.max_skipped_steps={tr.max_skipped_steps}; {kept}")
    log.warning("%s; update skipped on all ranks (%d/%d allowed)", what, state.skipped_steps, tr.max_skipped_steps)


class StepMeter:
    """History rows: losses, lr, logit scale, skipped steps, throughput and, with a known peak, MFU."""

    def __init__(self, cfg: RunConfig, env: DistEnv, *, start_step: int) -> None:
        self.cfg, self.env, self.last_step, self.tick = cfg, env, start_step, time.perf_counter()
        self.peak = peak_flops(cfg.train)
        self.flops_per_sample_sum, self.counted_steps = 0.0, 0
        self.flops_by_text_tokens: dict[int, float] = {}

    def count(self, *, text_tokens: int) -> None:
        """Add a step's model FLOPs: they depend on its text length, which the loader cuts to the longest caption
        (this rank's; the ranks' lengths differ a little, so the logged MFU is rank 0's view)."""
        if text_tokens not in self.flops_by_text_tokens:
            self.flops_by_text_tokens[text_tokens] = train_flops_per_sample(self.cfg.model, self.cfg.ito,
                                                                            text_tokens=text_tokens)
        self.flops_per_sample_sum += self.flops_by_text_tokens[text_tokens]
        self.counted_steps += 1

    def row(self, state: TrainState, losses: dict[str, torch.Tensor], *, lr: float) -> dict[str, Any]:
        now = time.perf_counter()
        samples_per_s = self.cfg.train.batch_size * (state.step - self.last_step) / (now - self.tick)
        row = {"step": state.step, "lr": lr, **{k: round(v.item(), 5) for k, v in losses.items()},
               "skipped_steps": state.skipped_steps, "samples_per_s": round(samples_per_s, 1)}
        util = mfu(train_flops_per_sample=self.flops_per_sample_sum / max(self.counted_steps, 1),
                   samples_per_s=samples_per_s, world_size=self.env.world_size, peak=self.peak)
        self.flops_per_sample_sum, self.counted_steps = 0.0, 0
        if util is not None:
            row["mfu"] = round(util, 4)
        self.last_step, self.tick = state.step, now
        if self.env.rank == 0:
            log.info("step %d/%d %s", state.step, self.cfg.train.steps,
                     " ".join(f"{k}={v}" for k, v in row.items() if k != "step"))
        return row
