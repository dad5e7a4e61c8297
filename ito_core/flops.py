"""Model FLOPs per training sample, counted analytically from the config, and MFU.

Counted as matmul FLOPs (2 per multiply-accumulate), attention included, as in the PaLM /
nanoGPT MFU convention; layer norms, softmax, GELU and the loss are left out (< 1 %). A
pre-LN block over N tokens of width d with MLP ratio r costs ``2 N d^2 (4 + 2 r)`` in its
projections and ``4 N^2 d`` in ``QK^T`` and ``AV``: ``24 N d^2 + 4 N^2 d`` for r = 4.

One ITO sample is M image views, N captions and, with fusion, M x N fused pairs. With fusion the
towers project every token to the joint space (the fusion module reads them); without, only the
pooled one, as OpenCLIP: ViT-B/16 CLIP counts 35.13 + 5.96 GF, OpenCLIP's count (docs/REFERENCE.md). The cheaper
training views (``ito_core.config.views``) are counted as they run: each view's patch embedding over all its patches
at its own size, its tower over CLS + the patches patch dropout keeps.

Training FLOPs are the forward plus a backward of 2x the forward (input and weight gradients),
except the patch embedding, whose input (the pixels) needs no gradient: torch's FlopCounterMode
agrees to < 0.5 % (``bench/train_step.py``). Recomputation is not model work: activation
checkpointing and the accumulation cache pass make the hardware do more than this.
"""

from __future__ import annotations

import os

from ito_core.config import ItoConfig, ModelConfig, TrainConfig, fuses
from ito_core.config.validation import fusion_image_tokens
from ito_core.config.views import kept_patches, view_sizes

PEAK_TFLOPS_ENV = "ITO_PEAK_TFLOPS"


def transformer_flops(*, tokens: int, width: int, layers: int, mlp_ratio: float, out_rows: int | None = None) -> float:
    """Forward FLOPs of ``layers`` pre-LN blocks over one sequence of ``tokens`` tokens; with ``out_rows`` the last
    block computes only that many rows (keys and values still from every token), as a tower read out at one token."""
    kv_per_token = 2 * width**2 * 2  # K and V projections
    rest_per_row = 2 * width**2 * (2 + 2 * mlp_ratio)  # Q (d^2) + out (d^2) + MLP (2 r d^2)
    full_block = tokens * (kv_per_token + rest_per_row) + 4 * tokens**2 * width  # + QK^T and AV
    if layers == 0 or out_rows is None:
        return layers * full_block
    last_block = tokens * kv_per_token + out_rows * rest_per_row + 4 * out_rows * tokens * width
    return (layers - 1) * full_block + last_block


def patch_embedding_flops(model: ModelConfig, image_size: int | None = None) -> float:
    """Forward FLOPs of the patch embedding of one image view of ``image_size`` px (default ``model.image_size``)."""
    patches = ((image_size or model.image_size) // model.patch_size) ** 2
    return 2 * patches * 3 * model.patch_size**2 * model.vision_width


def image_view_flops(model: ModelConfig, *, image_size: int, patch_dropout: float, token_wise: bool,
                     one_row_last_blocks: bool = True) -> float:
    """Forward FLOPs of one training view: the patch embedding of every patch, the tower over CLS + the kept patches,
    the projection of every token (``token_wise``: the fusion reads them) or of the pooled one."""
    tokens = 1 + kept_patches((image_size // model.patch_size) ** 2, patch_dropout)
    return (patch_embedding_flops(model, image_size)
            + transformer_flops(tokens=tokens, width=model.vision_width, layers=model.vision_layers,
                                mlp_ratio=model.mlp_ratio, out_rows=_read_rows(token_wise, one_row_last_blocks))
            + 2 * (tokens if token_wise else 1) * model.vision_width * model.embed_dim)


def forward_flops_per_sample(model: ModelConfig, ito: ItoConfig, *, text_tokens: int | None = None,
                             one_row_last_blocks: bool = True) -> dict[str, float]:
    """Forward FLOPs of one sample, by part: ``image`` (M views), ``text`` (N captions), ``fusion``, ``total``.
    ``text_tokens``: the tokens each caption runs (the loader cuts padding after the batch's longest caption);
    default the whole context. ``one_row_last_blocks=False`` counts every row of every last block, as OpenCLIP
    computes them."""
    grid = model.image_size // model.patch_size
    image_tokens, text_tokens = grid**2 + 1, text_tokens or model.context_length
    # The fusion module reads every text token and the image tokens of ito.fusion_image_tokens (all of them, the CLS
    # token only, or CLS + a pooled grid); a tower nobody reads token-wise is read out at one token (CLS / EOT), so
    # only that row is projected to the joint space and (ours) computed by the last block.
    keep = fusion_image_tokens(ito.fusion_image_tokens, grid=grid) if fuses(ito) else 0
    image_read, text_read = fuses(ito) and keep != 0, fuses(ito)
    image = sum(image_view_flops(model, image_size=size, patch_dropout=ito.patch_dropout, token_wise=image_read,
                                 one_row_last_blocks=one_row_last_blocks) for size in view_sizes(model, ito))
    text = (transformer_flops(tokens=text_tokens, width=model.text_width, layers=model.text_layers,
                              mlp_ratio=model.mlp_ratio, out_rows=_read_rows(text_read, one_row_last_blocks))
            + 2 * (text_tokens if text_read else 1) * model.text_width * model.embed_dim)
    parts = {"image": image, "text": ito.texts * text, "fusion": 0.0}
    if fuses(ito):
        width = ito.fusion_width or model.embed_dim
        fused_image_tokens = image_tokens if keep is None else 1 + keep
        seq = fused_image_tokens + text_tokens + (ito.readout == "token")  # + the learned read-out token
        in_proj = 0 if width == model.embed_dim else 2 * (fused_image_tokens + text_tokens) * model.embed_dim * width
        # cls / token: the last block computes that row only
        read_rows = None if ito.readout == "mean" or not one_row_last_blocks else 1
        pair = in_proj + transformer_flops(tokens=seq, width=width, layers=ito.fusion_depth, mlp_ratio=model.mlp_ratio,
                                           out_rows=read_rows)
        parts["fusion"] = ito.images * ito.texts * pair
    parts["total"] = parts["image"] + parts["text"] + parts["fusion"]
    return parts


def _read_rows(token_wise: bool, one_row_last_blocks: bool) -> int | None:
    """Rows a tower's last block computes: every row when its tokens are read (or counted as OpenCLIP), else 1."""
    return None if token_wise or not one_row_last_blocks else 1


def train_flops_per_sample(model: ModelConfig, ito: ItoConfig, *, text_tokens: int | None = None,
                           one_row_last_blocks: bool = True) -> float:
    """Forward + backward FLOPs of one sample: 3x the forward, less the patch embeddings' input gradients."""
    forward = forward_flops_per_sample(model, ito, text_tokens=text_tokens,
                                       one_row_last_blocks=one_row_last_blocks)["total"]
    return 3 * forward - sum(patch_embedding_flops(model, size) for size in view_sizes(model, ito))


def peak_flops(train: TrainConfig) -> float | None:
    """Peak FLOP/s of one device: ``train.peak_tflops``, else env ``ITO_PEAK_TFLOPS``, else unknown (None)."""
    tflops = train.peak_tflops or float(os.environ.get(PEAK_TFLOPS_ENV) or 0)
    return tflops * 1e12 if tflops > 0 else None


def mfu(*, train_flops_per_sample: float, samples_per_s: float, world_size: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation of the whole job (None when the peak is unknown)."""
    return None if peak is None else train_flops_per_sample * samples_per_s / (peak * world_size)
