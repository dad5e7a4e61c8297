"""Turn a training checkpoint into the deployable dual encoder (ITO's "strip" step).

Consolidates any ZeRO stage's shards on one CPU process (DeepSpeed's zero_to_fp32 API, no
process group needed), keeps only ``encoder.*`` (the fusion module and anything else
training-only is dropped), and writes one model folder:

- ``model.safetensors`` + ``model_config.json``: ours (``load_stripped``; its ``architecture`` field says
  which class the weights build: ``dual_encoder``, or ``one_tower`` for ``method=oner``);
- ``open_clip_model.safetensors`` + ``open_clip_config.json``: OpenCLIP's layout (``ito_core.export``), for dual
  encoders only (OpenCLIP's CLIP has a vision and a text tower and cannot hold OneR's single one);
- ``tokenizer_spec.json``: the CLIP BPE tokenizer the model was trained with;
- ``README.md``: the model card (training config, data manifest hash, steps, eval summary once evaluated);
- ``flair_pool.safetensors`` + ``flair_pool_config.json``, for ``method=flair`` only: the text-conditioned pooling
  module, not part of the dual encoder, for FLAIR's own eval path (``ito_core.eval.text_conditioned``).

The stripped model has exactly its deployable encoder's parameters and inference cost (a CLIP dual encoder's for
every method but OneR).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file

from ito_core import checkpoint
from ito_core.artifacts import RunLayout, committed, member_key, read_manifest, train_data_key
from ito_core.config import ModelConfig, RunConfig, as_dict
from ito_core.data import tokenizer as clip_bpe
from ito_core.export import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, export_open_clip
from ito_core.methods.flair import save_pooler
from ito_core.methods.oner import OneTower
from ito_core.models.dual_encoder import DualEncoder
from ito_core.models.ito import ENCODER_PREFIX
from ito_core.storage import ArtifactStore, commit

WEIGHTS, MODEL_CONFIG = "model.safetensors", "model_config.json"
TOKENIZER_SPEC, MODEL_CARD = "tokenizer_spec.json", "README.md"
EVAL_BEGIN, EVAL_END = "<!-- eval:begin -->", "<!-- eval:end -->"
DUAL_ENCODER, ONE_TOWER = "dual_encoder", "one_tower"
NO_OPEN_CLIP = ("OpenCLIP's `CLIP` holds a vision tower and a text tower; a single tower shared by both "
                "modalities has no place in that layout")


def architecture(cfg: RunConfig) -> str:
    """The deployable encoder's class: OneR's single tower, else the CLIP dual encoder."""
    return ONE_TOWER if cfg.method.name == "oner" else DUAL_ENCODER


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


def save_stripped(state: dict[str, torch.Tensor], model_cfg: ModelConfig, out_dir: Path,
                  extra: dict[str, Any], *, arch: str = DUAL_ENCODER) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    spec = {"architecture": arch, "model": asdict(model_cfg), **extra}
    (out_dir / MODEL_CONFIG).write_text(json.dumps(spec, indent=2))


def load_stripped(model_dir: Path) -> DualEncoder | OneTower:
    """Build the deployable encoder from a stripped model folder (safetensors only, no pickles).

    Folders written before the ``architecture`` field existed hold dual encoders."""
    spec = json.loads((Path(model_dir) / MODEL_CONFIG).read_text())
    state = load_file(str(Path(model_dir) / WEIGHTS))
    arch, model_cfg = spec.get("architecture", DUAL_ENCODER), ModelConfig(**spec["model"])
    if arch == ONE_TOWER:
        model: DualEncoder | OneTower = OneTower(model_cfg)
    elif arch == DUAL_ENCODER:
        bias = state["logit_bias"].item() if "logit_bias" in state else None
        model = DualEncoder(model_cfg, logit_bias=bias)
    else:
        raise ValueError(f"{Path(model_dir) / MODEL_CONFIG}: architecture={arch!r}; this version of ito_core "
                         f"loads {DUAL_ENCODER!r} and {ONE_TOWER!r}")
    model.load_state_dict(state)
    return model.eval()


def tokenizer_spec(context_length: int) -> dict[str, Any]:
    """What a user needs to rebuild the tokenizer: CLIP's BPE (= ``open_clip.tokenize``), its vocabulary's hash."""
    tok = clip_bpe.build_tokenizer(context_length)
    return {"kind": "clip_bpe", "vocab_file": clip_bpe.VOCAB_PATH.name,
            "vocab_sha256": hashlib.sha256(clip_bpe.VOCAB_PATH.read_bytes()).hexdigest(),
            "vocab_size": tok.vocab_size, "context_length": context_length, "sot_token_id": tok.sot_token_id,
            "eot_token_id": tok.eot_token_id, "pad_token_id": 0,
            "cleaning": "ftfy + html unescape + whitespace + lower",
            "reference": "open_clip.tokenizer.SimpleTokenizer; ito_core.data.tokenizer.ClipTokenizer"}


def _eval_summary(records: list[dict[str, Any]] | None) -> str:
    if not records:
        return "Not evaluated yet: the eval stage rewrites this section."
    lines = ["| dataset | task | metrics |", "|---|---|---|"]
    for r in records:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items())
        # Plots live in the run's eval/ folder, beside this model/ folder.
        plots = "".join(f" ([{name}](../eval/{file}))" for name, file in r.get("plots", {}).items())
        dataset = f"{r['dataset']} (in-distribution)" if r.get("in_distribution") else r["dataset"]
        lines.append(f"| {dataset} | {r['task']} | {metrics}{plots} |")
    note = "In-distribution: the training data holds other samples of that set's source (same classes)."
    return "\n".join(lines) + (f"\n\n{note}" if any(r.get("in_distribution") for r in records) else "")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def model_card(cfg: RunConfig, manifest: dict[str, Any], records: list[dict[str, Any]] | None = None) -> str:
    """The model folder's README.md, from the run config and the strip manifest (+ eval records when there are)."""
    m, views, captions = manifest, _count(cfg.ito.images, "image view"), _count(cfg.ito.texts, "caption")
    if architecture(cfg) == ONE_TOWER:
        title = f"OneR single tower `{cfg.model.name}`"
        summary = f"""One transformer for image patches and text tokens (OneR, arXiv 2211.11153), trained with the
ITC, XMC, CIC and CMC losses; it has no training-only weights: {m["num_parameters"]:,} parameters."""
        open_clip_files = f"- No OpenCLIP export: {NO_OPEN_CLIP}."
    else:
        title = f"{cfg.method.name.upper()} dual encoder `{cfg.model.name}`"
        summary = f"""A CLIP dual encoder (ViT image tower, causal text transformer) trained with
`method={cfg.method.name}`: {views} x {captions} per sample, fusion `{cfg.ito.fusion}` (weight
{cfg.ito.fusion_weight}), loss `{cfg.loss.name}`. Training-only weights (ITO's fusion module, SLIP's SSL head,
FLAIR's pooling) were dropped: the model has exactly a CLIP dual encoder's {m["num_parameters"]:,} parameters
({m["dropped_parameters"]:,} training-only parameters removed)."""
        open_clip_files = f"""- `{OPEN_CLIP_WEIGHTS}` + `{OPEN_CLIP_CONFIG}`: OpenCLIP layout,
  `open_clip.create_model_and_transforms("local-dir:<folder>")`."""
    return f"""# {title}

{summary}

| | |
|---|---|
| training steps | {m["steps"]} |
| final training loss | {m["final_loss"]} |
| training data | `{m["data_key"]}` (manifest sha256 `{m["data_manifest_sha256"]}`) |
| source checkpoint | `{m["source_checkpoint"]}` |

## Files

- `{WEIGHTS}` + `{MODEL_CONFIG}`: `ito_core.strip.load_stripped(folder)`.
{open_clip_files}
- `{TOKENIZER_SPEC}`: CLIP BPE, context length {cfg.model.context_length} (`open_clip.tokenize` ids).

## Evaluation

{EVAL_BEGIN}
{_eval_summary(records)}
{EVAL_END}

## Training config

```yaml
{OmegaConf.to_yaml(as_dict(cfg)).rstrip()}
```
"""


def _data_manifest(store: ArtifactStore, cfg: RunConfig) -> tuple[str, str]:
    """(store key, sha256 of its canonical JSON) of the training data's manifest; "unknown" if not in the store."""
    key = train_data_key(cfg.data)
    if not committed(store, key):
        return key, "unknown"
    blob = json.dumps(read_manifest(store, key), sort_keys=True, separators=(",", ":"))
    return key, hashlib.sha256(blob.encode()).hexdigest()


def write_model_folder(state: dict[str, torch.Tensor], cfg: RunConfig, out_dir: Path, manifest: dict[str, Any],
                       records: list[dict[str, Any]] | None = None) -> None:
    """Every file of a stripped model folder: ours, OpenCLIP's, the tokenizer spec and the model card."""
    spec, arch = tokenizer_spec(cfg.model.context_length), architecture(cfg)
    save_stripped(state, cfg.model, out_dir, {"tokenizer": spec, "source_checkpoint": manifest["source_checkpoint"]},
                  arch=arch)
    if arch == DUAL_ENCODER:  # ONE_TOWER: see NO_OPEN_CLIP (the model card says why)
        export_open_clip(state, cfg.model, out_dir)
    (out_dir / TOKENIZER_SPEC).write_text(json.dumps(spec, indent=2))
    (out_dir / MODEL_CARD).write_text(model_card(cfg, manifest, records))


def write_model_card(cfg: RunConfig, *, store: ArtifactStore, run_key: str, records: list[dict[str, Any]]) -> None:
    """Rewrite ``<run_key>/model/README.md`` with the eval summary (for the eval stage)."""
    model = RunLayout(run_key).model
    store.write_text(member_key(model, MODEL_CARD), model_card(cfg, read_manifest(store, model), records))


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
        write_model_folder(state, cfg, Path(tmp), manifest)
        # FLAIR's pooler is training-only for the dual encoder, but its own eval path uses it: kept beside.
        save_pooler(full, Path(tmp), dim=cfg.model.embed_dim, heads=cfg.method.flair_heads)
        store.upload_dir(Path(tmp), run.model)
    commit(store, run.model, manifest)
    return manifest
