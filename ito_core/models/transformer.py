"""Pre-LN transformer blocks shared by the image tower, the text tower and the fusion module.

Parameter names follow OpenCLIP (``ln_1``, ``attn.in_proj_weight``, ``mlp.c_fc`` ...) so the
export adapter is a key rename, not a re-layout. Attention runs through
``F.scaled_dot_product_attention`` (fused kernels on GPU and CPU).

A tower read out at one token (CLIP's image CLS, the text EOT, the fusion CLS) only needs that
token's output from its last block: ``rows_BQ`` restricts the last block's queries, out
projection and MLP to those rows, while keys and values still come from every token. The result
is the same; the last block's per-token work shrinks from T rows to Q.

Shape legend: B batch, T tokens, Q output rows, D width, H heads.
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

    def forward(self, x_BTD: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rows_BQ: torch.Tensor | None = None) -> torch.Tensor:
        """Attention output ``[B, T, D]``, or ``[B, Q, D]`` for the query rows ``rows_BQ`` only."""
        B, T, D = x_BTD.shape
        heads, head_dim = self.heads, D // self.heads
        if rows_BQ is None:
            qkv = F.linear(x_BTD, self.in_proj_weight, self.in_proj_bias)
            q_BHQd, k_BHTd, v_BHTd = qkv.view(B, T, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
        else:
            kv = F.linear(x_BTD, self.in_proj_weight[D:], self.in_proj_bias[D:])
            k_BHTd, v_BHTd = kv.view(B, T, 2, heads, head_dim).permute(2, 0, 3, 1, 4)
            q = F.linear(gather_rows(x_BTD, rows_BQ), self.in_proj_weight[:D], self.in_proj_bias[:D])
            q_BHQd = q.view(B, -1, heads, head_dim).transpose(1, 2)
        out_BHQd = F.scaled_dot_product_attention(q_BHQd, k_BHTd, v_BHTd, attn_mask=attn_mask)
        return self.out_proj(out_BHQd.transpose(1, 2).reshape(B, -1, D))


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

    def forward(self, x_BTD: torch.Tensor, attn_mask: torch.Tensor | None = None,
                rows_BQ: torch.Tensor | None = None) -> torch.Tensor:
        """The block's output ``[B, T, D]``, or only the rows ``rows_BQ`` ``[B, Q, D]``."""
        attended = self.attn(self.ln_1(x_BTD), attn_mask, rows_BQ)
        x_BQD = (x_BTD if rows_BQ is None else gather_rows(x_BTD, rows_BQ)) + attended
        return x_BQD + self.mlp(self.ln_2(x_BQD))


class Transformer(nn.Module):
    def __init__(self, *, width: int, layers: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers))

    def forward(self, x_BTD: torch.Tensor, attn_mask: torch.Tensor | None = None, *,
                rows_BQ: torch.Tensor | None = None, rows_mask: torch.Tensor | None = None) -> torch.Tensor:
        """All tokens' outputs, or with ``rows_BQ`` only those rows' (``[B, Q, D]``). ``rows_mask`` is the attention
        mask of those query rows when ``attn_mask`` depends on the query (a causal mask); else ``attn_mask`` serves."""
        if not self.resblocks:
            return x_BTD if rows_BQ is None else gather_rows(x_BTD, rows_BQ)
        *body, last = self.resblocks
        for block in body:
            x_BTD = block(x_BTD, attn_mask)
        if rows_BQ is None:
            return last(x_BTD, attn_mask)
        return last(x_BTD, attn_mask if rows_mask is None else rows_mask, rows_BQ)


def gather_rows(x_BTD: torch.Tensor, rows_BQ: torch.Tensor) -> torch.Tensor:
    """``x_BTD[b, rows_BQ[b, q]]`` as ``[B, Q, D]``."""
    return x_BTD.gather(1, rows_BQ[..., None].expand(-1, -1, x_BTD.shape[-1]))
