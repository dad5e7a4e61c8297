"""The training-time ITO model: a dual encoder plus an optional fusion module.

Views and captions go through each tower in ONE batched pass (B*M images, B*N captions); the
fusion module then sees every (view, caption) pair of a sample. Only ``encoder.*`` is deployed. With a
lower-resolution second view (``ito.second_view_size``, training only) view 1 and the resized views 2..M take one pass
each.

Shape legend: B samples, M image views, N captions, K = M*N fused pairs, C/H/W pixels,
L tokens, T image tokens, E joint dim, P = B*K fused pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ito_core.config import ItoConfig, ModelConfig, fuses
from ito_core.config.views import view_sizes
from ito_core.models.dual_encoder import DualEncoder
from ito_core.models.fusion import build_fusion, reduce_image_tokens

ENCODER_PREFIX = "encoder."


class ItoModel(nn.Module):
    def __init__(self, model: ModelConfig, ito: ItoConfig, *, logit_bias: float | None = None) -> None:
        """``logit_bias``: the initial learnable logit bias (``losses.init_logit_bias``), None for no bias."""
        super().__init__()
        self.encoder = DualEncoder(model, logit_bias=logit_bias, patch_dropout=ito.patch_dropout)
        self.fusion = build_fusion(model, ito) if fuses(ito) else None
        self.view_sizes = view_sizes(model, ito)

    def forward(self, images_BMCHW: torch.Tensor, tokens_BNL: torch.Tensor) -> dict[str, torch.Tensor]:
        B, M, N = images_BMCHW.shape[0], images_BMCHW.shape[1], tokens_BNL.shape[1]
        fuse = self.fusion is not None
        keep = self.fusion.keep_image_tokens if fuse else None
        # With ito.fusion_image_tokens=cls the fusion reads the pooled image embedding: no token outputs needed.
        img_pooled, img_tokens = self._encode_views(images_BMCHW, return_tokens=fuse and keep != 0)
        txt_pooled, txt_tokens = self.encoder.text(tokens_BNL.flatten(0, 1), return_tokens=fuse)
        out = {
            "image_features_BMD": F.normalize(img_pooled, dim=-1).view(B, M, -1),
            "text_features_BND": F.normalize(txt_pooled, dim=-1).view(B, N, -1),
            "logit_scale": self.encoder.scale(),
        }
        if self.encoder.logit_bias is not None:
            out["logit_bias"] = self.encoder.bias()
        if fuse:
            img_tokens = img_pooled[:, None] if keep == 0 else reduce_image_tokens(img_tokens, keep=keep)
            out["fused_BKD"] = self._fuse(img_tokens.view(B, M, *img_tokens.shape[1:]),
                                          txt_tokens.view(B, N, *txt_tokens.shape[1:]), tokens_BNL)
        return out

    def _encode_views(self, images_BMCHW: torch.Tensor, *, return_tokens: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image tower's outputs for the B*M views (view-major per sample, as ``flatten(0, 1)``)."""
        B, M = images_BMCHW.shape[:2]
        full, small = self.view_sizes[0], self.view_sizes[-1]
        if small == full or not self.training:
            return self.encoder.visual(images_BMCHW.flatten(0, 1), return_tokens=return_tokens)
        assert not return_tokens, "views of two sizes give two token counts: ito.fusion_image_tokens=cls (validated)"
        first_BE, _ = self.encoder.visual(images_BMCHW[:, 0])
        rest_PE, _ = self.encoder.visual(resize_views(images_BMCHW[:, 1:].flatten(0, 1), size=small))
        return torch.cat([first_BE[:, None], rest_PE.view(B, M - 1, -1)], dim=1).flatten(0, 1), None

    def _fuse(self, img_BMTE: torch.Tensor, txt_BNLE: torch.Tensor, tokens_BNL: torch.Tensor) -> torch.Tensor:
        B, M, N = img_BMTE.shape[0], img_BMTE.shape[1], txt_BNLE.shape[1]
        # Pair every view m with every caption n: index k = m * N + n.
        img_PTE = img_BMTE[:, :, None].expand(-1, -1, N, -1, -1).flatten(0, 2)
        txt_PLE = txt_BNLE[:, None].expand(-1, M, -1, -1, -1).flatten(0, 2)
        tok_PL = tokens_BNL[:, None].expand(-1, M, -1, -1).flatten(0, 2)
        return self.fusion(img_PTE, txt_PLE, tok_PL).view(B, M * N, -1)


def resize_views(views_PCHW: torch.Tensor, *, size: int) -> torch.Tensor:
    """Augmented views resized to ``size`` px, antialiased bilinear: the same crop at a lower resolution (in fp32:
    torch's CPU antialiasing has no bf16 kernel)."""
    resized = F.interpolate(views_PCHW.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.to(views_PCHW.dtype)
