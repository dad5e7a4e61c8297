"""The ITO training loop on a DeepSpeed engine (ZeRO 0-3, fp32/bf16, CPU gloo or GPU NCCL).

One call of ``train`` is one rank of one run. Every stateful piece is restored on resume:
weights, optimizer, scheduler and step live in the DeepSpeed checkpoint; the data position is
the number of consumed batches (the stream is deterministic); augmentation randomness is
re-seeded from (seed, rank, step) each step, so it needs no saved state. An interrupted and
resumed run therefore equals an uninterrupted one, bitwise on CPU.

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
from ito_core.config import RunConfig, as_dict
from ito_core.data.augment import MultiViewAugment
from ito_core.data.loader import TrainStream, build_train_loader
from ito_core.data.tokenizer import build_tokenizer
from ito_core.distributed import DistEnv, init_distributed
from ito_core.losses import FusionLoss, MultiAlignLoss, build_align_loss
from ito_core.models.ito import ItoModel
from ito_core.storage import ArtifactStore, commit
from ito_core.tracking import Tracker

log = logging.getLogger(__name__)


def deepspeed_config(cfg: RunConfig, world_size: int) -> dict[str, Any]:
    return {
        "train_batch_size": cfg.train.batch_size,
        "train_micro_batch_size_per_gpu": cfg.train.batch_size // world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.train.grad_clip,
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage},
        "bf16": {"enabled": cfg.deepspeed.bf16},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on gains, biases, embeddings' scalars and the logit scale (as CLIP)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim < 2 or "logit_" in name else decay).append(param)
    tr = cfg.train
    groups = [{"params": decay, "weight_decay": tr.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tr.lr, betas=(tr.beta1, tr.beta2), eps=tr.eps)


def cosine_with_warmup(step: int, *, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63)


class ItoObjective(nn.Module):
    """L = L_align (mean over all M x N view/caption pairs) + lambda * L_fusion (ITO, Eq. 5)."""

    def __init__(self, cfg: RunConfig, env: DistEnv) -> None:
        super().__init__()
        pair = build_align_loss(cfg.loss.name, rank=env.rank, world_size=env.world_size)
        self.align = MultiAlignLoss(pair)
        self.fusion = FusionLoss(rank=env.rank, world_size=env.world_size)
        self.fusion_weight = cfg.ito.fusion_weight

    def forward(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = self.align(out["image_features_BMD"], out["text_features_BND"], out["logit_scale"],
                            out.get("logit_bias"))
        total = losses["align_loss"]
        if "fused_BKD" in out:
            # The fusion loss uses CLIP's temperature but must not move it: detach the scale.
            losses.update(self.fusion(out["fused_BKD"], out["logit_scale"].detach()))
            total = total + self.fusion_weight * losses["fusion_loss"]
        return {"loss": total, **losses}


def train(cfg: RunConfig, *, shard_paths: list[str], samples_per_epoch: int, store: ArtifactStore, run_key: str,
          staging: Path) -> dict[str, Any]:
    """Train (or resume) one run; rank 0 commits ``<run_key>/train/manifest.json`` at the end."""
    import deepspeed

    env = init_distributed()
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = ItoModel(cfg.model, cfg.ito, cfg.loss)
    optimizer = build_optimizer(model, cfg)
    total = cfg.train.steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, warmup=cfg.train.warmup_steps, total=total))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler,
                                           config=deepspeed_config(cfg, env.world_size))
    ckpt_key = f"{run_key}/checkpoints"
    state = checkpoint.restore(engine, store=store, key=ckpt_key, staging=staging) or {"step": 0, "history": []}
    device, dtype = engine.device, torch.bfloat16 if cfg.deepspeed.bf16 else torch.float32
    objective = ItoObjective(cfg, env)
    augment = MultiViewAugment(image_size=cfg.model.image_size, num_views=cfg.ito.images).to(device)
    stream = TrainStream(
        shard_paths, batch_size=cfg.train.batch_size // env.world_size, num_texts=cfg.ito.texts,
        tokenizer=build_tokenizer(cfg.model.context_length), seed=cfg.seed, rank=env.rank,
        world_size=env.world_size, start_batch=state["step"], samples_per_epoch=samples_per_epoch)
    tracker = Tracker(cfg, run_key=run_key, rank=env.rank, directory=staging / "wandb")
    batches, tick = iter(build_train_loader(stream, num_workers=cfg.data.num_workers)), time.perf_counter()
    for step in range(state["step"], total):
        batch = next(batches)
        torch.manual_seed(step_seed(cfg.seed, env.rank, step))
        images_BMCHW = augment(batch["images"].to(device)).to(dtype)
        losses = objective(engine(images_BMCHW, batch["texts"].to(device)))
        engine.backward(losses["loss"])
        engine.step()
        state["step"] = step + 1
        if state["step"] % cfg.train.log_every == 0 or state["step"] == total:
            tick = _log_step(state, losses, engine, cfg, env, tick)
            tracker.log(state["history"][-1])
        if state["step"] % cfg.train.checkpoint_every == 0 or state["step"] == total:
            checkpoint.save(engine, store=store, key=ckpt_key, staging=staging, step=state["step"],
                            train_state=state, keep=cfg.train.keep_checkpoints)
    summary = {"step": state["step"], "checkpoint": checkpoint.tag_for(state["step"]),
               "history": state["history"], "config": as_dict(cfg)}
    if env.rank == 0:
        commit(store, f"{run_key}/train", summary)
    tracker.finish()
    return summary


def _log_step(state: dict[str, Any], losses: dict[str, torch.Tensor], engine: Any, cfg: RunConfig,
              env: DistEnv, tick: float) -> float:
    now = time.perf_counter()
    row = {"step": state["step"], "lr": engine.get_lr()[0], **{k: round(v.item(), 5) for k, v in losses.items()}}
    row["samples_per_s"] = round(cfg.train.batch_size * cfg.train.log_every / (now - tick), 1)
    state["history"].append(row)
    if env.rank == 0:
        log.info("step %d/%d %s", state["step"], cfg.train.steps,
                 " ".join(f"{k}={v}" for k, v in row.items() if k != "step"))
    return now
