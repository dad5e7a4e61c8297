"""Training-time fusion modules (ITO, arXiv 2603.02767, Sec. 3.2), stripped before deployment.

The published module: a 2-layer bidirectional transformer over
``[image tokens (CLS + patches) + fixed 2-D sin-cos positions ; text tokens + learned positions]``
in the joint embedding space, text padding masked as keys, read out at the image CLS token
(or the mean of valid tokens, or an extra learned token), then L2-normalised.

Shape legend: B batch (all fused pairs), T image tokens, L text tokens, E joint dim, W fusion width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ito_core.config import ItoConfig, ModelConfig
from ito_core.config.validation import fusion_image_tokens
from ito_core.models.text import eot_positions
from ito_core.models.transformer import Transformer


def sincos_2d_positions(grid_size: int, width: int) -> torch.Tensor:
    """Fixed 2-D sin-cos embedding ``[1 + grid^2, width]`` (MAE style); the CLS row is zero."""
    assert width % 4 == 0, "sin-cos 2-D positions need a width divisible by 4"
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))
    ys, xs = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    parts = [f(c.flatten()[:, None].double() * omega[None]) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    grid_PW = torch.cat(parts, dim=1).float()
    return torch.cat([torch.zeros(1, width), grid_PW], dim=0)


def reduce_image_tokens(tokens_BTE: torch.Tensor, *, keep: int | None) -> torch.Tensor:
    """The image tokens the fusion module reads (``ito.fusion_image_tokens``): all (``keep`` None), the CLS token
    only (0), or the CLS token + the square patch grid average-pooled to ``keep`` tokens."""
    if keep is None:
        return tokens_BTE
    cls_B1E = tokens_BTE[:, :1]
    if keep == 0:
        return cls_B1E
    B, T, E = tokens_BTE.shape
    grid = math.isqrt(T - 1)
    patches_BEhw = tokens_BTE[:, 1:].transpose(1, 2).reshape(B, E, grid, grid)
    pooled_BkE = F.adaptive_avg_pool2d(patches_BEhw, math.isqrt(keep)).flatten(2).transpose(1, 2)
    return torch.cat([cls_B1E, pooled_BkE], dim=1)


class TransformerFusion(nn.Module):
    def __init__(self, model: ModelConfig, ito: ItoConfig) -> None:
        super().__init__()
        width = ito.fusion_width or model.embed_dim
        self.readout = ito.readout
        self.in_proj = nn.Identity() if width == model.embed_dim else nn.Linear(model.embed_dim, width)
        grid = model.image_size // model.patch_size
        self.keep_image_tokens = fusion_image_tokens(ito.fusion_image_tokens, grid=grid)
        # Positions of the kept tokens: the pooled grid's own sin-cos (a coarser grid), the zero CLS row alone.
        kept_grid = grid if self.keep_image_tokens is None else math.isqrt(self.keep_image_tokens)
        self.register_buffer("image_positions", sincos_2d_positions(kept_grid, width),
                             persistent=False)
        self.text_positions = nn.Parameter(0.01 * torch.randn(model.context_length, width))
        self.readout_token = nn.Parameter(0.02 * torch.randn(1, 1, width)) if ito.readout == "token" else None
        self.transformer = Transformer(width=width, layers=ito.fusion_depth, heads=ito.fusion_heads,
                                       mlp_ratio=model.mlp_ratio)
        self.ln = nn.LayerNorm(width)

    def forward(self, image_tokens_BTE: torch.Tensor, text_tokens_BLE: torch.Tensor,
                tokens_BL: torch.Tensor) -> torch.Tensor:
        """Fuse each row's image tokens with its caption tokens; return L2-normalised ``[B, W]``."""
        B, T, L = image_tokens_BTE.shape[0], image_tokens_BTE.shape[1], tokens_BL.shape[1]
        img_BTW = self.in_proj(image_tokens_BTE) + self.image_positions.to(image_tokens_BTE.dtype)
        txt_BLW = self.in_proj(text_tokens_BLE) + self.text_positions[:L].to(text_tokens_BLE.dtype)
        text_valid_BL = torch.arange(L, device=tokens_BL.device)[None] <= eot_positions(tokens_BL)[:, None]
        parts, valid = [img_BTW, txt_BLW], [torch.ones(B, T, dtype=torch.bool, device=tokens_BL.device),
                                             text_valid_BL]
        if self.readout_token is not None:
            parts.insert(0, self.readout_token.expand(B, 1, -1).to(img_BTW.dtype))
            valid.insert(0, torch.ones(B, 1, dtype=torch.bool, device=tokens_BL.device))
        x_BSW, valid_BS = torch.cat(parts, dim=1), torch.cat(valid, dim=1)
        # Padding is masked as keys; its query rows are never read out.
        keys_mask = valid_BS[:, None, None, :]
        if self.readout == "mean":
            x_BSW = self.ln(self.transformer(x_BSW, attn_mask=keys_mask))
            pooled_BW = (x_BSW * valid_BS[..., None]).sum(1) / valid_BS.sum(1, keepdim=True)
        else:  # "cls" (image CLS is first) or "token" (the read-out token is first): the last block computes row 0
            first_B1 = torch.zeros(B, 1, dtype=torch.long, device=x_BSW.device)
            pooled_BW = self.ln(self.transformer(x_BSW, attn_mask=keys_mask, rows_BQ=first_B1))[:, 0]
        return F.normalize(pooled_BW, dim=-1)


FUSION_KINDS: dict[str, type[nn.Module] | None] = {"none": None, "transformer": TransformerFusion}


def build_fusion(model: ModelConfig, ito: ItoConfig) -> nn.Module | None:
    """The fusion module for ``ito.fusion``, or None for plain (multi-)alignment."""
    if ito.fusion not in FUSION_KINDS:
        raise ValueError(f"ito.fusion={ito.fusion!r}; choose one of {sorted(FUSION_KINDS)}")
    kind = FUSION_KINDS[ito.fusion]
    return None if kind is None else kind(model, ito)
