"""Turn a training checkpoint into the deployable model (ITO's "strip" step).

Consolidates any ZeRO stage's shards on one CPU process (DeepSpeed's zero_to_fp32 API, no process group needed),
keeps only ``encoder.*`` (the fusion module and anything else training-only is dropped) and commits one model
folder (``ito_core.model_folder``: the files, the model card, the extra files the method keeps beside it).

The stripped model has exactly its deployable encoder's parameters and inference cost (a CLIP dual encoder's for
every method whose spec deploys one).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from ito_core import checkpoint
from ito_core.artifacts import RunLayout, committed, read_manifest, train_data_key
from ito_core.config import RunConfig
from ito_core.model_folder import write_model_folder
from ito_core.models.ito import ENCODER_PREFIX
from ito_core.storage import ArtifactStore, commit


def consolidate(checkpoint_dir: Path, tag: str, *, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 state dict of the training model from a DeepSpeed checkpoint folder."""
    if zero_stage == 0:
        # Without ZeRO the module weights sit whole in the rank-0 model file; everything DeepSpeed writes
        # beside them (optimizer state, config dict, counters) passes the restricted weights-only unpickler.
        states = torch.load(checkpoint_dir / tag / "mp_rank_00_model_states.pt", map_location="cpu",
                            weights_only=True)
        return {k: v.float() for k, v in states["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint_dir), tag=tag)


def encoder_state(full_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop every training-only weight: keep the dual encoder, renamed to its own keys."""
    return {k[len(ENCODER_PREFIX):]: v.contiguous() for k, v in full_state.items() if k.startswith(ENCODER_PREFIX)}


def _data_manifest(store: ArtifactStore, cfg: RunConfig) -> tuple[str, str]:
    """(store key, sha256 of its canonical JSON) of the training data's manifest; "unknown" if not in the store."""
    key = train_data_key(cfg.data)
    if not committed(store, key):
        return key, "unknown"
    blob = json.dumps(read_manifest(store, key), sort_keys=True, separators=(",", ":"))
    return key, hashlib.sha256(blob.encode()).hexdigest()


def strip(cfg: RunConfig, *, store: ArtifactStore, run_key: str, staging: Path) -> dict[str, Any]:
    """Consolidate the run's final checkpoint and commit ``<run_key>/model``."""
    run = RunLayout(run_key)
    train_manifest = read_manifest(store, run.train)
    tag = train_manifest["checkpoint"]
    ckpt_dir = checkpoint.checkpoint_dir(store, run.checkpoints, staging / "checkpoints")
    if store.local_dir(run.checkpoints) is None:
        store.download_dir(run.checkpoint(tag), ckpt_dir / tag)
    full = consolidate(ckpt_dir, tag, zero_stage=cfg.deepspeed.zero_stage)
    state = encoder_state(full)
    data_key, data_hash = _data_manifest(store, cfg)
    history = train_manifest.get("history") or [{}]
    manifest = {"checkpoint": tag, "num_parameters": sum(v.numel() for v in state.values()),
                "dropped_parameters": sum(v.numel() for k, v in full.items() if not k.startswith(ENCODER_PREFIX)),
                "steps": train_manifest.get("step"), "final_loss": history[-1].get("loss"),
                "data_key": data_key, "data_manifest_sha256": data_hash,
                "source_checkpoint": store.url(run.checkpoint(tag))}
    with tempfile.TemporaryDirectory(dir=staging) as tmp:
        write_model_folder(state, cfg, Path(tmp), manifest, full_state=full)
        store.upload_dir(Path(tmp), run.model)
    commit(store, run.model, manifest)
    return manifest
