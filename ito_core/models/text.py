"""Causal text transformer as in CLIP / OpenCLIP: pooled at the EOT token (the largest id).

Shape legend: B batch, L context length, D width, E joint embed dim.
"""

from __future__ import annotations

import torch
from torch import nn

from ito_core.config import ModelConfig
from ito_core.models.transformer import Transformer, gather_rows


def eot_positions(tokens_BL: torch.Tensor) -> torch.Tensor:
    """Index of the EOT token per row: it has the largest id in the CLIP vocabulary."""
    return tokens_BL.argmax(dim=-1)


class TextTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        width = cfg.text_width
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, width))
        self.transformer = Transformer(width=width, layers=cfg.text_layers, heads=cfg.text_heads,
                                       mlp_ratio=cfg.mlp_ratio)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, cfg.embed_dim))
        causal_LL = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal_LL, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def forward(self, tokens_BL: torch.Tensor, *, return_tokens: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pooled embedding ``[B, E]`` and, for the fusion module, all token features in the joint space
        ``[B, L, E]`` (projected only when asked)."""
        L = tokens_BL.shape[1]
        x_BLD = self.token_embedding(tokens_BL) + self.positional_embedding[:L]
        causal_LL = self.attn_mask[:L, :L].to(x_BLD.dtype)
        eot_B1 = eot_positions(tokens_BL)[:, None]
        if return_tokens:  # the fusion module reads every token
            x_BLD = self.ln_final(self.transformer(x_BLD, causal_LL))
            eot_BD = gather_rows(x_BLD, eot_B1)[:, 0]
            return eot_BD @ self.text_projection, x_BLD @ self.text_projection
        # Pooled at EOT: the last block computes that row only, under its row of the causal mask.
        eot_BD = self.ln_final(self.transformer(x_BLD, causal_LL, rows_BQ=eot_B1,
                                                rows_mask=causal_LL[eot_B1][:, None]))[:, 0]
        return eot_BD @ self.text_projection, None
