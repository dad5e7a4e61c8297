"""ito.fusion_image_tokens: which image tokens the fusion module reads (all | cls | pool<k>)."""

from __future__ import annotations

import pytest
import torch

from ito_core.config import ItoConfig, ModelConfig, load_config
from ito_core.models.fusion import reduce_image_tokens
from ito_core.models.ito import ItoModel

MODEL = ModelConfig(name="t", embed_dim=32, image_size=32, patch_size=8, vision_width=32, vision_layers=1,
                    vision_heads=2, context_length=12, vocab_size=100, text_width=32, text_layers=1, text_heads=2)


def test_pooling_averages_square_blocks_of_the_patch_grid_after_the_cls_token():
    tokens_BTE = torch.randn(3, 1 + 16, 5)  # CLS + a 4 x 4 grid
    pooled = reduce_image_tokens(tokens_BTE, keep=4)
    grid = tokens_BTE[:, 1:].view(3, 4, 4, 5)
    blocks = [grid[:, r:r + 2, c:c + 2].mean(dim=(1, 2)) for r in (0, 2) for c in (0, 2)]
    torch.testing.assert_close(pooled, torch.stack([tokens_BTE[:, 0], *blocks], dim=1))
    assert torch.equal(reduce_image_tokens(tokens_BTE, keep=0), tokens_BTE[:, :1])
    assert reduce_image_tokens(tokens_BTE, keep=None) is tokens_BTE


def test_cls_only_fusion_reads_the_pooled_image_embedding():
    """fusion_image_tokens=cls fuses the pooled image embedding: the CLS row of the tower's full token output."""
    images, tokens = torch.randn(2, 2, 3, 32, 32), torch.randint(1, 90, (2, 1, 12))
    tokens[:, :, -1] = 99  # EOT: the largest id
    torch.manual_seed(0)
    full = ItoModel(MODEL, ItoConfig(images=2, texts=1)).eval()
    torch.manual_seed(0)
    cls_only = ItoModel(MODEL, ItoConfig(images=2, texts=1, fusion_image_tokens="cls")).eval()
    with torch.no_grad():
        _, img_tokens = full.encoder.visual(images.flatten(0, 1), return_tokens=True)
        _, txt_tokens = full.encoder.text(tokens.flatten(0, 1), return_tokens=True)
        expected = cls_only.fusion(img_tokens[:, :1], txt_tokens.repeat_interleave(2, dim=0),
                               tokens.flatten(0, 1).repeat_interleave(2, dim=0))
        got = cls_only(images, tokens)["fused_BKD"]
    torch.testing.assert_close(got.flatten(0, 1), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", ["all", "cls", "pool1", "pool4", "pool16"])
def test_every_valid_choice_trains_a_fused_vector_per_view(value):
    model = ItoModel(MODEL, ItoConfig(images=2, texts=1, fusion_image_tokens=value))
    tokens = torch.randint(1, 99, (2, 1, 12))
    out = model(torch.randn(2, 2, 3, 32, 32), tokens)
    assert out["fused_BKD"].shape == (2, 2, 32)
    out["fused_BKD"].sum().backward()
    assert model.fusion.transformer.resblocks[0].attn.in_proj_weight.grad is not None


@pytest.mark.parametrize("value", ["pool3", "pool25", "pool0", "mean", "pool"])
def test_a_bad_choice_names_the_key_and_the_fix(value):
    with pytest.raises(ValueError, match=r"ito.fusion_image_tokens.*use e.g. all, cls, pool4"):
        load_config(["model=tiny", f"ito.fusion_image_tokens={value}"])
