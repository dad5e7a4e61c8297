"""Export in OpenCLIP's layout: one state-dict adapter (torchtitan style) plus OpenCLIP's model config.

Our towers already use OpenCLIP's parameter names, so the adapter is small and total: the text tower's
``text.`` prefix goes (OpenCLIP's ``CLIP`` keeps the text modules at its top level), ``logit_scale`` /
``logit_bias`` go from shape [1] (DeepSpeed cannot broadcast 0-dim parameters) to OpenCLIP's [], and
nothing is dropped. The folder written here is what ``open_clip.create_model("local-dir:DIR")`` reads
(``open_clip_config.json`` = ``{"model_cfg", "preprocess_cfg"}``, as on the HF hub, + ``open_clip_model.safetensors``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ito_core.config import ModelConfig
from ito_core.data.augment import CLIP_MEAN, CLIP_STD
from ito_core.models.dual_encoder import DualEncoder

OPEN_CLIP_WEIGHTS, OPEN_CLIP_CONFIG = "open_clip_model.safetensors", "open_clip_config.json"
TEXT_PREFIX = "text."
SCALARS = ("logit_scale", "logit_bias")  # ours [1], OpenCLIP's []
# Top-level names of OpenCLIP's CLIP that belong to its built-in text tower.
OPEN_CLIP_TEXT_ROOTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
# OpenCLIP model-config options that DualEncoder implements (anything else changes the architecture).
_MODEL_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "init_logit_bias", "quick_gelu"}
_VISION_KEYS = {"image_size", "layers", "width", "head_width", "patch_size", "mlp_ratio"}
_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}


def _root(key: str) -> str:
    return key.split(".", 1)[0]


class OpenClipStateDictAdapter:
    """Maps a ``DualEncoder`` state dict to OpenCLIP ``CLIP`` keys and back; unknown keys raise ``ValueError``."""

    def to_open_clip(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state_dict.items():
            if key in SCALARS:
                out[key] = value.reshape(())
            elif key.startswith("visual."):
                out[key] = value
            elif key.startswith(TEXT_PREFIX) and _root(key[len(TEXT_PREFIX):]) in OPEN_CLIP_TEXT_ROOTS:
                out[key[len(TEXT_PREFIX):]] = value
            else:
                raise ValueError(f"{key!r} is not a DualEncoder weight; export a stripped model (strip.encoder_state)")
        return out

    def from_open_clip(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, value in state_dict.items():
            if key in SCALARS:
                out[key] = value.reshape(1)
            elif key.startswith("visual."):
                out[key] = value
            elif _root(key) in OPEN_CLIP_TEXT_ROOTS:
                out[TEXT_PREFIX + key] = value
            else:
                raise ValueError(f"{key!r} is not a weight of an OpenCLIP ViT CLIP with the built-in text tower "
                                 "(timm/HF towers, CoCa and attention pooling have no DualEncoder counterpart)")
        return out


def open_clip_model_config(cfg: ModelConfig, *, logit_bias: float | None = None) -> dict[str, Any]:
    """OpenCLIP's model config (as ``src/open_clip/model_configs/*.json``) for our architecture."""
    model_cfg: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "vision_cfg": {"image_size": cfg.image_size, "layers": cfg.vision_layers, "width": cfg.vision_width,
                       # OpenCLIP derives the head count as width // head_width
                       "head_width": cfg.vision_width // cfg.vision_heads, "patch_size": cfg.patch_size,
                       "mlp_ratio": cfg.mlp_ratio},
        "text_cfg": {"context_length": cfg.context_length, "vocab_size": cfg.vocab_size, "width": cfg.text_width,
                     "heads": cfg.text_heads, "layers": cfg.text_layers, "mlp_ratio": cfg.mlp_ratio},
    }
    if logit_bias is not None:  # OpenCLIP only creates the logit_bias parameter when given an initial value
        model_cfg["init_logit_bias"] = logit_bias
    return model_cfg


def open_clip_preprocess_config(cfg: ModelConfig) -> dict[str, Any]:
    """OpenCLIP's ``PreprocessCfg`` matching ``ito_core.data.augment.eval_transform``."""
    return {"size": cfg.image_size, "mode": "RGB", "mean": list(CLIP_MEAN), "std": list(CLIP_STD),
            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}


def export_open_clip(state_dict: dict[str, torch.Tensor], cfg: ModelConfig, out_dir: Path) -> None:
    """Write ``open_clip_model.safetensors`` + ``open_clip_config.json`` for a stripped state dict."""
    bias = state_dict["logit_bias"].item() if "logit_bias" in state_dict else None
    open_clip_state = {k: v.contiguous() for k, v in OpenClipStateDictAdapter().to_open_clip(state_dict).items()}
    config = {"model_cfg": open_clip_model_config(cfg, logit_bias=bias),
              "preprocess_cfg": open_clip_preprocess_config(cfg)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(open_clip_state, str(out_dir / OPEN_CLIP_WEIGHTS), metadata={"format": "pt"})
    (out_dir / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2))


def model_config_from_open_clip(model_cfg: dict[str, Any], *, name: str = "open_clip") -> ModelConfig:
    """Our ``ModelConfig`` for an OpenCLIP ViT model config (the inverse of ``open_clip_model_config``)."""
    vision, text = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    unsupported = [*(set(model_cfg) - _MODEL_KEYS), *(f"vision_cfg.{k}" for k in set(vision) - _VISION_KEYS),
                   *(f"text_cfg.{k}" for k in set(text) - _TEXT_KEYS)]
    if unsupported or model_cfg.get("quick_gelu") or vision.get("mlp_ratio", 4.0) != text.get("mlp_ratio", 4.0):
        raise ValueError(f"this OpenCLIP config has options DualEncoder does not implement ({sorted(unsupported)}, "
                         "quick_gelu or two different mlp_ratio): only plain ViT + causal text transformer CLIPs map")
    return ModelConfig(name=name, embed_dim=model_cfg["embed_dim"], image_size=vision.get("image_size", 224),
                       patch_size=vision.get("patch_size", 16), vision_width=vision.get("width", 768),
                       vision_layers=vision.get("layers", 12),
                       vision_heads=vision.get("width", 768) // vision.get("head_width", 64),
                       context_length=text.get("context_length", 77), vocab_size=text.get("vocab_size", 49408),
                       text_width=text.get("width", 512), text_heads=text.get("heads", 8),
                       text_layers=text.get("layers", 12), mlp_ratio=vision.get("mlp_ratio", 4.0))


def load_open_clip_export(model_dir: Path) -> DualEncoder:
    """Build our ``DualEncoder`` from an OpenCLIP-layout folder (safetensors only, no pickles)."""
    config = json.loads((Path(model_dir) / OPEN_CLIP_CONFIG).read_text())["model_cfg"]
    state = OpenClipStateDictAdapter().from_open_clip(load_file(str(Path(model_dir) / OPEN_CLIP_WEIGHTS)))
    model = DualEncoder(model_config_from_open_clip(config), logit_bias=config.get("init_logit_bias"))
    model.load_state_dict(state)
    return model.eval()
