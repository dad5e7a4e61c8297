"""The deployable CLIP dual encoder: image tower, text tower, learnable logit scale (and bias)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ito_core.config import ModelConfig
from ito_core.models.text import TextTransformer
from ito_core.models.vision import VisionTransformer


class DualEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, *, logit_bias: float | None = None, patch_dropout: float = 0.0) -> None:
        """``patch_dropout``: the image tower's training-only patch dropout (``ito.patch_dropout``); no weights."""
        super().__init__()
        self.visual = VisionTransformer(cfg, patch_dropout=patch_dropout)
        self.text = TextTransformer(cfg)
        # Shape [1], not OpenCLIP's []: DeepSpeed cannot broadcast 0-dim parameters (export reshapes).
        self.logit_scale = nn.Parameter(torch.tensor([cfg.init_logit_scale]))
        # Only SigLIP learns a bias; keeping it absent otherwise keeps CLIP's parameter count exact.
        self.logit_bias = nn.Parameter(torch.tensor([logit_bias])) if logit_bias is not None else None

    def encode_image(self, images_BCHW: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        pooled_BE, _ = self.visual(images_BCHW)
        return F.normalize(pooled_BE, dim=-1) if normalize else pooled_BE

    def encode_text(self, tokens_BL: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        pooled_BE, _ = self.text(tokens_BL)
        return F.normalize(pooled_BE, dim=-1) if normalize else pooled_BE

    def scale(self) -> torch.Tensor:
        """The exp'd logit scale, clamped at 100 as CLIP does."""
        return self.logit_scale.exp().clamp(max=100.0).squeeze(0)

    def bias(self) -> torch.Tensor | None:
        return None if self.logit_bias is None else self.logit_bias.squeeze(0)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

