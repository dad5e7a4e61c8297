"""Analytic FLOPs per sample against independent reference counts, and when MFU is reported."""

from __future__ import annotations

import pytest

from ito_core.config import ItoConfig, ModelConfig, TrainConfig, load_config
from ito_core.flops import (
    PEAK_TFLOPS_ENV,
    forward_flops_per_sample,
    mfu,
    patch_embedding_flops,
    peak_flops,
    train_flops_per_sample,
    transformer_flops,
)


def test_vit_b_16_matches_the_reference_count() -> None:
    """ENV_FACTS (OpenCLIP ViT-B-16, counted with FlopCounterMode): image 35.13 GF, text 5.96 GF. With fusion
    ours projects every token to the joint space (the fusion reads them): +0.15 GF image, +0.04 GF text."""
    model = load_config(["model=vit_b_16"]).model
    flops = forward_flops_per_sample(model, ItoConfig(images=1, texts=1, fusion="none"))
    assert flops["image"] == pytest.approx(35.13e9, rel=2e-3)
    assert flops["text"] == pytest.approx(5.96e9, rel=2e-3)
    assert flops["fusion"] == 0 and flops["total"] == flops["image"] + flops["text"]
    fused = forward_flops_per_sample(model, ItoConfig(images=1, texts=2, fusion="transformer"))
    assert fused["image"] - flops["image"] == 196 * 2 * 768 * 512
    assert fused["text"] / 2 - flops["text"] == 76 * 2 * 512 * 512


def test_training_is_three_forwards_less_the_pixels_gradient() -> None:
    model = load_config(["model=vit_b_16"]).model
    ito = ItoConfig(images=2, texts=1, fusion="transformer")
    assert patch_embedding_flops(model) == 2 * 196 * (3 * 16 * 16) * 768
    assert train_flops_per_sample(model, ito) == (3 * forward_flops_per_sample(model, ito)["total"]
                                                  - 2 * patch_embedding_flops(model))


def test_ito_counts_views_captions_and_fused_pairs() -> None:
    model = ModelConfig(name="t", embed_dim=64, image_size=32, patch_size=8, vision_width=64, vision_layers=2,
                        vision_heads=2, context_length=32, text_width=64, text_layers=2, text_heads=2)
    one = forward_flops_per_sample(model, ItoConfig(images=1, texts=1, fusion="none"))
    ito = forward_flops_per_sample(model, ItoConfig(images=2, texts=3, fusion="transformer", fusion_depth=2))
    # with fusion every token is projected to the joint space (17 image, 32 text tokens), else the pooled one
    assert ito["image"] == 2 * (one["image"] + 16 * 2 * 64 * 64) and ito["text"] == 3 * (one["text"] + 31 * 2 * 64 * 64)
    pair = transformer_flops(tokens=17 + 32, width=64, layers=2, mlp_ratio=4.0)  # CLS + 16 patches ; 32 tokens
    assert ito["fusion"] == 6 * pair
    off = forward_flops_per_sample(model, ItoConfig(images=2, texts=1, fusion="transformer", fusion_weight=0.0))
    assert off["fusion"] == 0  # lambda = 0 builds no fusion module


def test_transformer_layer_is_24_n_d2_plus_4_n2_d() -> None:
    assert transformer_flops(tokens=10, width=8, layers=3, mlp_ratio=4.0) == 3 * (24 * 10 * 64 + 4 * 100 * 8)


def test_mfu_only_with_a_known_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEAK_TFLOPS_ENV, raising=False)
    assert peak_flops(TrainConfig()) is None
    assert mfu(train_flops_per_sample=1e9, samples_per_s=100, world_size=2, peak=None) is None
    monkeypatch.setenv(PEAK_TFLOPS_ENV, "0.5")
    assert peak_flops(TrainConfig()) == 0.5e12
    assert peak_flops(TrainConfig(peak_tflops=989.0)) == 989e12  # the config wins over the env
    assert mfu(train_flops_per_sample=1e9, samples_per_s=100, world_size=2, peak=1e11) == 0.5
