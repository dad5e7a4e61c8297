"""Turn a training checkpoint into the deployable dual encoder (ITO's "strip" step).

Consolidates any ZeRO stage's shards on one CPU process (DeepSpeed's zero_to_fp32 API, no
process group needed), keeps only ``encoder.*`` (the fusion module and anything else
training-only is dropped), and writes ``model.safetensors`` + ``model_config.json``. The stripped
model has exactly a CLIP dual encoder's parameters and inference cost.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ito_core import checkpoint
from ito_core.config import ModelConfig, RunConfig
from ito_core.models.dual_encoder import DualEncoder
from ito_core.models.ito import ENCODER_PREFIX
from ito_core.storage import ArtifactStore, commit

WEIGHTS, MODEL_CONFIG = "model.safetensors", "model_config.json"


def consolidate(checkpoint_dir: Path, tag: str, *, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 state dict of the training model from a DeepSpeed checkpoint folder."""
    if zero_stage == 0:
        # Without ZeRO the module weights sit whole in the rank-0 model file; DeepSpeed pickles
        # its own objects beside them, so this checkpoint (written by us) needs the full unpickler.
        states = torch.load(checkpoint_dir / tag / "mp_rank_00_model_states.pt", map_location="cpu",
                            weights_only=False)
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)


def encoder_state(full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop every training-only weight: keep the dual encoder, renamed to its own keys."""
    return {k[len(ENCODER_PREFIX):]: v.contiguous() for k, v in full_state.items() if k.startswith(ENCODER_PREFIX)}


def save_stripped(state: dict[str, torch.Tensor], model_cfg: ModelConfig, out_dir: Path,
                  extra: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    (out_dir / MODEL_CONFIG).write_text(json.dumps({"model": asdict(model_cfg), **extra}, indent=2))


def load_stripped(model_dir: Path) -> DualEncoder:
    """Build the dual encoder from a stripped model folder (safetensors only, no pickles)."""
    spec = json.loads((Path(model_dir) / MODEL_CONFIG).read_text())
    state = load_file(str(Path(model_dir) / WEIGHTS))
    bias = state["logit_bias"].item() if "logit_bias" in state else None
    model = DualEncoder(ModelConfig(**spec["model"]), logit_bias=bias)
    model.load_state_dict(state)
    return model.eval()


def strip(cfg: RunConfig, *, store: ArtifactStore, run_key: str, staging: Path) -> dict[str, Any]:
    """Consolidate the run's final checkpoint and commit ``<run_key>/model``."""
    train_manifest = store.read_json(f"{run_key}/train/manifest.json")
    tag, ckpt_key = train_manifest["checkpoint"], f"{run_key}/checkpoints"
    ckpt_dir = checkpoint.checkpoint_dir(store, ckpt_key, staging / "checkpoints")
    if store.local_dir(ckpt_key) is None:
        store.download_dir(f"{ckpt_key}/{tag}", ckpt_dir / tag)
    full = consolidate(ckpt_dir, tag, zero_stage=cfg.deepspeed.zero_stage)
    state = encoder_state(full)
    extra = {"tokenizer": {"kind": "clip_bpe", "context_length": cfg.model.context_length},
             "source_checkpoint": store.url(f"{ckpt_key}/{tag}")}
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        save_stripped(state, cfg.model, Path(tmp), extra)
        store.upload_dir(Path(tmp), f"{run_key}/model")
    manifest = {"checkpoint": tag, "num_parameters": sum(v.numel() for v in state.values()),
                "dropped_parameters": sum(v.numel() for k, v in full.items() if not k.startswith(ENCODER_PREFIX))}
    commit(store, f"{run_key}/model", manifest)
    return manifest
