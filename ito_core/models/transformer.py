"""Pre-LN transformer blocks shared by the image tower, the text tower and the fusion module.

Parameter names follow OpenCLIP (``ln_1``, ``attn.in_proj_weight``, ``mlp.c_fc`` ...) so the
export adapter is a key rename, not a re-layout. Attention runs through
``F.scaled_dot_product_attention`` (fused kernels on GPU and CPU).

Shape legend: B batch, T tokens, D width, H heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x_BTD: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x_BTD.shape
        qkv = F.linear(x_BTD, self.in_proj_weight, self.in_proj_bias)
        q_BHTd, k_BHTd, v_BHTd = qkv.view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q_BHTd, k_BHTd, v_BHTd, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, D))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x_BTD: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x_BTD = x_BTD + self.attn(self.ln_1(x_BTD), attn_mask)
        return x_BTD + self.mlp(self.ln_2(x_BTD))


class Transformer(nn.Module):
    def __init__(self, *, width: int, layers: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x_BTD: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x_BTD = block(x_BTD, attn_mask)
        return x_BTD
