"""Analytic FLOPs per sample against independent reference counts, and when MFU is reported."""

from __future__ import annotations

from types import SimpleNamespace

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
from ito_core.train_state import TrainState


def skipped_rows_flops(*, tokens: int, width: int) -> int:
    """What a last block read out at one row skips: Q, out projection and MLP (2 d^2 (2 + 2 r), r = 4) of the
    other rows, and their attention rows."""
    return (tokens - 1) * 2 * width**2 * 10 + 4 * (tokens - 1) * tokens * width


def test_vit_b_16_matches_the_reference_count() -> None:
    """docs/REFERENCE.md (OpenCLIP ViT-B-16, counted with FlopCounterMode): image 35.13 GF, text 5.96 GF, every token
    through every block. Ours computes only the CLS / EOT row in the last block of a pooled tower. With fusion ours runs
    every row and projects every token to the joint space (the fusion reads them)."""
    model = load_config(["model=vit_b_16"]).model
    flops = forward_flops_per_sample(model, ItoConfig(images=1, texts=1, fusion="none"))
    image_skipped, text_skipped = skipped_rows_flops(tokens=197, width=768), skipped_rows_flops(tokens=77, width=512)
    assert flops["image"] + image_skipped == pytest.approx(35.13e9, rel=2e-3)
    assert flops["text"] + text_skipped == pytest.approx(5.96e9, rel=2e-3)
    assert flops["fusion"] == 0 and flops["total"] == flops["image"] + flops["text"]
    fused = forward_flops_per_sample(model, ItoConfig(images=1, texts=2, fusion="transformer"))
    assert fused["image"] - flops["image"] == image_skipped + 196 * 2 * 768 * 512
    assert fused["text"] / 2 - flops["text"] == text_skipped + 76 * 2 * 512 * 512


def test_text_tokens_are_the_tokens_captions_run() -> None:
    model = load_config(["model=vit_b_16"]).model
    clip = ItoConfig(images=1, texts=1, fusion="none")
    full, cut = forward_flops_per_sample(model, clip), forward_flops_per_sample(model, clip, text_tokens=16)
    assert cut["image"] == full["image"] and cut["text"] < full["text"] / 4
    assert forward_flops_per_sample(model, clip, text_tokens=77) == full
    ito = ItoConfig(images=2, texts=1, fusion="transformer")
    fused_full = forward_flops_per_sample(model, ito)["fusion"]
    assert forward_flops_per_sample(model, ito, text_tokens=16)["fusion"] == 2 * transformer_flops(
        tokens=197 + 16, width=512, layers=2, mlp_ratio=4.0, out_rows=1) < fused_full


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
    # with fusion every token (17 image, 32 text) runs the last block and is projected to the joint space
    image_extra = skipped_rows_flops(tokens=17, width=64) + 16 * 2 * 64 * 64
    text_extra = skipped_rows_flops(tokens=32, width=64) + 31 * 2 * 64 * 64
    assert ito["image"] == 2 * (one["image"] + image_extra) and ito["text"] == 3 * (one["text"] + text_extra)
    # CLS + 16 patches ; 32 tokens, read out at the image CLS: the last block computes that row only
    pair = transformer_flops(tokens=17 + 32, width=64, layers=2, mlp_ratio=4.0, out_rows=1)
    assert ito["fusion"] == 6 * pair
    mean = forward_flops_per_sample(model, ItoConfig(images=2, texts=3, fusion="transformer", readout="mean"))
    assert mean["fusion"] == 6 * transformer_flops(tokens=17 + 32, width=64, layers=2, mlp_ratio=4.0)
    off = forward_flops_per_sample(model, ItoConfig(images=2, texts=1, fusion="transformer", fusion_weight=0.0))
    assert off["fusion"] == 0  # lambda = 0 builds no fusion module


def test_transformer_layer_is_24_n_d2_plus_4_n2_d() -> None:
    assert transformer_flops(tokens=10, width=8, layers=3, mlp_ratio=4.0) == 3 * (24 * 10 * 64 + 4 * 100 * 8)
    # one output row in the last block: K, V of all 10 tokens (4 d^2 each), the rest for 1 row, 1 attention row
    assert transformer_flops(tokens=10, width=8, layers=3, mlp_ratio=4.0, out_rows=1) == (
        2 * (24 * 10 * 64 + 4 * 100 * 8) + 4 * 10 * 64 + 20 * 64 + 4 * 10 * 8)


def test_mfu_only_with_a_known_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PEAK_TFLOPS_ENV, raising=False)
    assert peak_flops(TrainConfig()) is None
    assert mfu(train_flops_per_sample=1e9, samples_per_s=100, world_size=2, peak=None) is None
    monkeypatch.setenv(PEAK_TFLOPS_ENV, "0.5")
    assert peak_flops(TrainConfig()) == 0.5e12
    assert peak_flops(TrainConfig(peak_tflops=989.0)) == 989e12  # the config wins over the env
    assert mfu(train_flops_per_sample=1e9, samples_per_s=100, world_size=2, peak=1e11) == 0.5


def test_history_rows_are_arithmetic_on_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step meter on a clock the test moves: samples/s and MFU are exact, whatever the machine's load."""
    import torch

    from ito_core import train
    from ito_core.distributed import DistEnv

    now = [100.0]
    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    cfg = load_config(["model=tiny", "train.batch_size=32", "train.peak_tflops=0.001"])
    meter = train.StepMeter(cfg, DistEnv(0, 0, 2), start_step=4)
    for tokens in (8, 16):
        meter.count(text_tokens=tokens)
    now[0] += 0.5  # two steps of 32 samples in 0.5 s
    row = meter.row(TrainState(step=6, skipped_steps=1), {"loss": torch.tensor(2.5)}, lr=1e-3)
    flops = [train_flops_per_sample(cfg.model, cfg.ito, text_tokens=tokens) for tokens in (8, 16)]
    assert row["samples_per_s"] == 128.0 and row["skipped_steps"] == 1 and row["loss"] == 2.5
    assert row["mfu"] == round(sum(flops) / 2 * 128.0 / (1e9 * 2), 4) > 0


def test_fewer_fused_image_tokens_cost_less_and_cls_only_spares_the_image_tower() -> None:
    model = load_config(["model=vit_b_16"]).model
    fusion = {v: forward_flops_per_sample(model, ItoConfig(fusion_image_tokens=v), text_tokens=16)
              for v in ("all", "pool16", "cls")}
    assert fusion["cls"]["fusion"] < fusion["pool16"]["fusion"] < fusion["all"]["fusion"]
    assert fusion["pool16"]["image"] == fusion["all"]["image"]  # pooling needs every token of the tower
    no_fusion = forward_flops_per_sample(model, ItoConfig(fusion="none"), text_tokens=16)
    assert fusion["cls"]["image"] == no_fusion["image"]  # the fusion reads the pooled embedding
