"""ViT image tower (Dosovitskiy et al. 2021) as in CLIP / OpenCLIP's ``VisionTransformer``.

Shape legend: B batch, C channels, T tokens (CLS + patches), D width, E joint embed dim.
"""

from __future__ import annotations

import torch
from torch import nn

from ito_core.config import ModelConfig
from ito_core.models.transformer import Transformer


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width, self.grid_size = cfg.vision_width, cfg.image_size // cfg.patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid_size**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width=width, layers=cfg.vision_layers, heads=cfg.vision_heads,
                                       mlp_ratio=cfg.mlp_ratio)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    def forward(self, images_BCHW: torch.Tensor, *, return_tokens: bool = False, project: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled embedding ``[B, E]`` and, for the fusion module, all tokens in the joint space ``[B, T, E]``
        (projected only when asked: inference pays exactly CLIP's cost). ``project=False``: the pooled feature
        before the projection, ``[B, D]`` (SLIP's SSL head reads it)."""
        x_BDhw = self.conv1(images_BCHW)
        x_BTD = x_BDhw.flatten(2).transpose(1, 2)
        cls_B1D = self.class_embedding.to(x_BTD.dtype).expand(x_BTD.shape[0], 1, -1)
        x_BTD = torch.cat([cls_B1D, x_BTD], dim=1) + self.positional_embedding.to(x_BTD.dtype)
        # Pooled at CLS: without the fusion module the last block computes the CLS row only.
        cls_rows_B1 = None if return_tokens else torch.zeros(x_BTD.shape[0], 1, dtype=torch.long, device=x_BTD.device)
        x_BTD = self.ln_post(self.transformer(self.ln_pre(x_BTD), rows_BQ=cls_rows_B1))
        pooled = x_BTD[:, 0] @ self.proj if project else x_BTD[:, 0]
        return pooled, (x_BTD @ self.proj if return_tokens else None)
