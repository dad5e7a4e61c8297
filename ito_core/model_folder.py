"""The stripped-model folder: its files, how to load it, its model card. The strip stage writes it, the eval stage
reads it and rewrites its card; neither knows which method trained it (the method's spec says).

- ``model.safetensors`` + ``model_config.json``: ours (:func:`load_stripped`; the ``architecture`` field says which
  class the weights build, a spec's ``Architecture``: ``dual_encoder`` for every method that deploys a CLIP);
- ``open_clip_model.safetensors`` + ``open_clip_config.json``: OpenCLIP's layout (``ito_core.export``), for the
  architectures OpenCLIP's ``CLIP`` can hold;
- ``tokenizer_spec.json``: the CLIP BPE tokenizer the model was trained with;
- ``README.md``: the model card (training config, data manifest hash, steps, eval summary once evaluated);
- the extra files the method keeps beside the model (its spec's ``save_files``, e.g. FLAIR's pooler).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from ito_core.artifacts import RunLayout, member_key, read_manifest
from ito_core.config import ModelConfig, RunConfig, as_dict
from ito_core.data import tokenizer as clip_bpe
from ito_core.export import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS, export_open_clip
from ito_core.methods import registry
from ito_core.methods.spec import DUAL_ENCODER, resolve
from ito_core.models.dual_encoder import DualEncoder
from ito_core.storage import ArtifactStore

WEIGHTS, MODEL_CONFIG = "model.safetensors", "model_config.json"
TOKENIZER_SPEC, MODEL_CARD = "tokenizer_spec.json", "README.md"
EVAL_BEGIN, EVAL_END = "<!-- eval:begin -->", "<!-- eval:end -->"


def build_dual_encoder(model: ModelConfig, state: dict[str, torch.Tensor]) -> DualEncoder:
    """``DUAL_ENCODER.build``: a CLIP dual encoder, with SigLIP's logit bias when the weights hold one."""
    return DualEncoder(model, logit_bias=state["logit_bias"].item() if "logit_bias" in state else None)


def save_stripped(state: dict[str, torch.Tensor], model_cfg: ModelConfig, out_dir: Path,
                  extra: dict[str, Any], *, arch: str = DUAL_ENCODER.name) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / WEIGHTS), metadata={"format": "pt"})
    spec = {"architecture": arch, "model": asdict(model_cfg), **extra}
    (out_dir / MODEL_CONFIG).write_text(json.dumps(spec, indent=2))


def load_stripped(model_dir: Path) -> nn.Module:
    """Build the deployable encoder from a stripped model folder (safetensors only, no pickles).

    Folders written before the ``architecture`` field existed hold dual encoders."""
    spec = json.loads((Path(model_dir) / MODEL_CONFIG).read_text())
    state = load_file(str(Path(model_dir) / WEIGHTS))
    try:
        arch = registry.architecture(spec.get("architecture", DUAL_ENCODER.name))
    except ValueError as err:
        raise ValueError(f"{Path(model_dir) / MODEL_CONFIG}: {err}") from None
    model = resolve(arch.build)(ModelConfig(**spec["model"]), state)
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


def model_card(cfg: RunConfig, manifest: dict[str, Any], records: list[dict[str, Any]] | None = None) -> str:
    """The model folder's README.md, from the run config and the strip manifest (+ eval records when there are)."""
    m, arch = manifest, registry.get(cfg.method.name).architecture
    title, summary = arch.card(cfg, m)
    if arch.open_clip:
        open_clip_files = f"""- `{OPEN_CLIP_WEIGHTS}` + `{OPEN_CLIP_CONFIG}`: OpenCLIP layout,
  `open_clip.create_model_and_transforms("local-dir:<folder>")`."""
    else:
        open_clip_files = f"- No OpenCLIP export: {arch.no_open_clip}."
    return f"""# {title}

{summary}

| | |
|---|---|
| training steps | {m["steps"]} |
| final training loss | {m["final_loss"]} |
| training data | `{m["data_key"]}` (manifest sha256 `{m["data_manifest_sha256"]}`) |
| source checkpoint | `{m["source_checkpoint"]}` |

## Files

- `{WEIGHTS}` + `{MODEL_CONFIG}`: `ito_core.model_folder.load_stripped(folder)`.
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


def write_model_folder(state: dict[str, torch.Tensor], cfg: RunConfig, out_dir: Path, manifest: dict[str, Any],
                       records: list[dict[str, Any]] | None = None, *,
                       full_state: dict[str, torch.Tensor] | None = None) -> None:
    """Every file of a stripped model folder: ours, OpenCLIP's, the tokenizer spec, the model card and, given the
    whole training state, the extra files the method keeps beside the model."""
    method, spec = registry.get(cfg.method.name), tokenizer_spec(cfg.model.context_length)
    save_stripped(state, cfg.model, out_dir, {"tokenizer": spec, "source_checkpoint": manifest["source_checkpoint"]},
                  arch=method.architecture.name)
    if method.architecture.open_clip:  # else the model card says why not
        export_open_clip(state, cfg.model, out_dir)
    (out_dir / TOKENIZER_SPEC).write_text(json.dumps(spec, indent=2))
    (out_dir / MODEL_CARD).write_text(model_card(cfg, manifest, records))
    if full_state is not None and method.save_files is not None:
        resolve(method.save_files)(full_state, out_dir, cfg)


def write_model_card(cfg: RunConfig, *, store: ArtifactStore, run_key: str, records: list[dict[str, Any]]) -> None:
    """Rewrite ``<run_key>/model/README.md`` with the eval summary (for the eval stage)."""
    model = RunLayout(run_key).model
    store.write_text(member_key(model, MODEL_CARD), model_card(cfg, read_manifest(store, model), records))
