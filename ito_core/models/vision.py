"""ViT image tower (Dosovitskiy et al. 2021) as in CLIP / OpenCLIP's ``VisionTransformer``.

Two training-only savings (``ito_core.config.views``): patch dropout (FLIP) keeps a random ``kept_patches`` of each
image's patch tokens after the position embedding, the CLS token always kept, as OpenCLIP's ``PatchDropout``; and
an image smaller than ``model.image_size`` (a lower-resolution view) gets the position embedding resampled to its
grid. In eval mode nothing is dropped, and a full-size image runs exactly as without either option.

Shape legend: B batch, C channels, T tokens (CLS + patches), P patches, K kept patches, D width, E joint embed dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ito_core.config import ModelConfig
from ito_core.config.views import kept_patches
from ito_core.models.transformer import Transformer, gather_rows


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig, *, patch_dropout: float = 0.0) -> None:
        """``patch_dropout``: the share of patch tokens dropped in training (``ito.patch_dropout``)."""
        super().__init__()
        width, self.grid_size = cfg.vision_width, cfg.image_size // cfg.patch_size
        self.patch_dropout = patch_dropout
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
        x_BTD = torch.cat([cls_B1D, x_BTD], dim=1) + self.positions(x_BDhw.shape[-1]).to(x_BTD.dtype)
        if self.training and self.patch_dropout > 0:
            x_BTD = drop_patches(x_BTD, keep=kept_patches(x_BTD.shape[1] - 1, self.patch_dropout))
        # Pooled at CLS: without the fusion module the last block computes the CLS row only.
        cls_rows_B1 = None if return_tokens else torch.zeros(x_BTD.shape[0], 1, dtype=torch.long, device=x_BTD.device)
        x_BTD = self.ln_post(self.transformer(self.ln_pre(x_BTD), rows_BQ=cls_rows_B1))
        pooled = x_BTD[:, 0] @ self.proj if project else x_BTD[:, 0]
        return pooled, (x_BTD @ self.proj if return_tokens else None)

    def positions(self, grid: int) -> torch.Tensor:
        """The position embedding ``[1 + grid^2, D]``: the learned one at the model's grid, else its patch rows
        resampled bicubically (antialiased, as timm's ``resample_abs_pos_embed``) to ``grid``, the CLS row as is."""
        if grid == self.grid_size:
            return self.positional_embedding
        cls_1D, patches_PD = self.positional_embedding[:1], self.positional_embedding[1:]
        patches_1Dhw = patches_PD.T.reshape(1, -1, self.grid_size, self.grid_size).float()  # no bf16 CPU kernel
        resized_1Dhw = F.interpolate(patches_1Dhw, size=(grid, grid), mode="bicubic", antialias=True,
                                     align_corners=False)
        return torch.cat([cls_1D, resized_1Dhw.flatten(2)[0].T.to(cls_1D.dtype)], dim=0)


def drop_patches(x_BTD: torch.Tensor, *, keep: int) -> torch.Tensor:
    """The CLS token (row 0) and ``keep`` patch tokens of each image, drawn at random without replacement from
    torch's generator on the tensor's device (train.py seeds it each step)."""
    scores_BP = torch.rand(x_BTD.shape[0], x_BTD.shape[1] - 1, device=x_BTD.device)
    patches_BK = scores_BP.topk(keep, dim=1).indices + 1  # + 1: past the CLS row
    return torch.cat([x_BTD[:, :1], gather_rows(x_BTD, patches_BK)], dim=1)
