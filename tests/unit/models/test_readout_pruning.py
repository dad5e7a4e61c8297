"""Work the models skip must not change what they compute: padding columns cut by ``trim_padding`` and the
last block computing only the read-out rows give the same outputs and gradients as the full computation."""

from __future__ import annotations

import pytest
import torch

from ito_core.config import ItoConfig, ModelConfig
from ito_core.data.tokenizer import build_tokenizer, trim_padding
from ito_core.models.ito import ItoModel
from ito_core.models.transformer import Transformer, gather_rows

MODEL = ModelConfig(name="test", embed_dim=32, image_size=32, patch_size=8, vision_width=32, vision_layers=2,
                    vision_heads=2, context_length=32, text_width=32, text_layers=2, text_heads=2)
CAPTIONS = ["a cat", "a red circle above a small blue square on a grey table", "two stars", "x"]
ATOL = 1e-5


def tokens(captions: list[str] = CAPTIONS) -> torch.Tensor:
    return build_tokenizer(MODEL.context_length)(captions)


def test_trim_padding_keeps_the_longest_text_rounded_up() -> None:
    full_BL = tokens()
    longest = int(full_BL.argmax(-1).max()) + 1
    trimmed = trim_padding(full_BL, multiple=8)
    assert trimmed.shape[1] == -(-longest // 8) * 8 < full_BL.shape[1]
    assert torch.equal(trimmed, full_BL[:, : trimmed.shape[1]])
    assert (full_BL[:, trimmed.shape[1]:] == 0).all()  # only padding was cut
    assert trim_padding(full_BL, multiple=1).shape[1] == longest
    assert trim_padding(full_BL[:, None], multiple=1).shape == (len(CAPTIONS), 1, longest)  # [B, N, L] too


def test_trim_padding_never_exceeds_the_context() -> None:
    full_BL = tokens(["word " * 100])  # cut to end in EOT at the last position
    assert trim_padding(full_BL, multiple=8).shape == full_BL.shape
    assert trim_padding(torch.zeros(0, 32, dtype=torch.long)).shape == (0, 32)


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_rows_equal_the_gathered_full_output(causal: bool) -> None:
    torch.manual_seed(0)
    net = Transformer(width=16, layers=3, heads=2, mlp_ratio=4.0)
    x_BTD = torch.randn(3, 7, 16)
    rows_BQ = torch.tensor([[0, 6], [3, 3], [5, 1]])
    if causal:
        mask_TT = torch.full((7, 7), float("-inf")).triu_(1)
        full = net(x_BTD, mask_TT)
        rows = net(x_BTD, mask_TT, rows_BQ=rows_BQ, rows_mask=mask_TT[rows_BQ][:, None])
    else:
        keys_B11T = torch.rand(3, 1, 1, 7) > 0.3
        keys_B11T[..., 0] = True
        full = net(x_BTD, keys_B11T)
        rows = net(x_BTD, keys_B11T, rows_BQ=rows_BQ)
    torch.testing.assert_close(rows, gather_rows(full, rows_BQ), atol=ATOL, rtol=0)


@pytest.mark.parametrize("readout", ["cls", "token", "mean"])
def test_ito_model_is_unchanged_by_trimming(readout: str) -> None:
    torch.manual_seed(0)
    model = ItoModel(MODEL, ItoConfig(images=2, texts=2, readout=readout))
    images_BMCHW = torch.randn(2, 2, 3, 32, 32)
    tokens_BNL = tokens().view(2, 2, -1)
    trimmed_BNL = trim_padding(tokens_BNL)
    assert trimmed_BNL.shape[-1] < tokens_BNL.shape[-1]
    outputs = []
    for toks in (tokens_BNL, trimmed_BNL):
        model.zero_grad()
        out = model(images_BMCHW, toks)
        sum(v.float().sum() * (i + 1) for i, v in enumerate(out.values())).backward()
        outputs.append((out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (full, full_grads), (cut, cut_grads) = outputs
    for key in full:
        torch.testing.assert_close(cut[key], full[key], atol=ATOL, rtol=0)
    # The positions past the longest caption get no gradient either way; every other gradient is the same.
    assert full_grads.keys() == cut_grads.keys()
    for name in full_grads:
        torch.testing.assert_close(cut_grads[name], full_grads[name], atol=1e-4, rtol=1e-4)


def test_pooled_towers_equal_their_full_token_pass() -> None:
    """Without fusion the towers compute only the CLS / EOT row in their last block; with it, every row."""
    torch.manual_seed(0)
    encoder = ItoModel(MODEL, ItoConfig(images=1, texts=1, fusion="none", fusion_weight=0.0)).encoder
    images_BCHW, tokens_BL = torch.randn(4, 3, 32, 32), tokens()
    for tower, inputs in ((encoder.visual, images_BCHW), (encoder.text, tokens_BL)):
        pooled, none = tower(inputs)
        pooled_full, all_tokens = tower(inputs, return_tokens=True)
        assert none is None and all_tokens is not None
        torch.testing.assert_close(pooled, pooled_full, atol=ATOL, rtol=0)
