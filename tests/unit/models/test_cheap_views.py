"""The cheaper training views (ito.patch_dropout, ito.second_view_size): what the tower runs in training, that eval
and the stripped model never see them, that accumulation replays the same patches, and that the FLOP count is what
torch's FlopCounterMode counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ito_core.accumulation import GradientAccumulation
from ito_core.config import ItoConfig, ModelConfig
from ito_core.flops import train_flops_per_sample
from ito_core.losses import build_objective
from ito_core.model_folder import load_stripped, save_stripped
from ito_core.models.ito import ItoModel, resize_views
from ito_core.models.vision import VisionTransformer, drop_patches
from ito_core.strip import encoder_state

MODEL = ModelConfig(name="t", embed_dim=32, image_size=32, patch_size=8, vision_width=32, vision_layers=2,
                    vision_heads=2, context_length=12, vocab_size=100, text_width=32, text_layers=1, text_heads=2)
CHEAP = ItoConfig(images=2, texts=1, fusion_image_tokens="cls", patch_dropout=0.5, second_view_size=16)
FULL = ItoConfig(images=2, texts=1, fusion_image_tokens="cls")


def inputs(views: int = 2, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 90, (batch, 1, MODEL.context_length), generator=gen)
    tokens[..., 7] = MODEL.vocab_size - 1  # EOT: the largest id
    return torch.randn(batch, views, 3, 32, 32, generator=gen), tokens


def twins(ito: ItoConfig) -> tuple[ItoModel, ItoModel]:
    """A model with ``ito``'s options and one without them, same weights."""
    torch.manual_seed(0)
    cheap = ItoModel(MODEL, ito)
    torch.manual_seed(0)
    return cheap, ItoModel(MODEL, FULL)


def test_dropout_keeps_cls_first_and_distinct_patches():
    x_BTD = torch.arange(2 * 17, dtype=torch.float32).view(2, 17, 1).expand(-1, -1, 4)
    kept = drop_patches(x_BTD, keep=8)
    assert kept.shape == (2, 9, 4)
    assert torch.equal(kept[:, 0], x_BTD[:, 0])
    for b in range(2):
        rows = kept[b, 1:, 0].tolist()
        assert len(set(rows)) == 8 and set(rows) <= set(x_BTD[b, 1:, 0].tolist())


def test_the_tower_runs_the_kept_tokens_in_training_only():
    tower = VisionTransformer(MODEL, patch_dropout=0.5)
    seen = []
    tower.ln_pre.register_forward_hook(lambda mod, args, out: seen.append(out.shape[1]))
    images = torch.randn(2, 3, 32, 32)
    tower(images)
    tower.eval()
    tower(images)
    assert seen == [1 + 8, 1 + 16]  # 16 patches: 8 kept in training, all in eval


def test_eval_mode_runs_every_patch_at_full_size():
    """Eval (and anything in eval mode) sees neither option: outputs equal the model trained without them."""
    cheap, full = twins(CHEAP)
    images, tokens = inputs()
    with torch.no_grad():
        got, want = cheap.eval()(images, tokens), full.eval()(images, tokens)
    assert torch.equal(got["image_features_BMD"], want["image_features_BMD"])
    assert torch.equal(got["fused_BKD"], want["fused_BKD"])


def test_the_second_view_runs_resized_with_resampled_positions():
    cheap, _ = twins(ItoConfig(images=2, texts=1, fusion_image_tokens="cls", second_view_size=16))
    images, tokens = inputs()
    out = cheap.train()(images, tokens)
    first, _ = cheap.encoder.visual(images[:, 0])
    second, _ = cheap.encoder.visual(resize_views(images[:, 1], size=16))
    torch.testing.assert_close(out["image_features_BMD"][:, 0], torch.nn.functional.normalize(first, dim=-1))
    torch.testing.assert_close(out["image_features_BMD"][:, 1], torch.nn.functional.normalize(second, dim=-1))
    assert cheap.encoder.visual.positions(2).shape == (1 + 4, 32)
    assert cheap.encoder.visual.positions(4) is cheap.encoder.visual.positional_embedding
    out["image_features_BMD"][:, 1].sum().backward()  # the small grid trains the full-grid embedding
    assert cheap.encoder.visual.positional_embedding.grad.abs().sum() > 0


def test_stripped_model_is_the_one_trained_without_the_options(tmp_path: Path):
    cheap, full = twins(CHEAP)
    cheap_state, full_state = encoder_state(cheap.state_dict()), encoder_state(full.state_dict())
    assert {k: v.shape for k, v in cheap_state.items()} == {k: v.shape for k, v in full_state.items()}
    save_stripped(cheap_state, MODEL, tmp_path / "cheap", {})
    save_stripped(full_state, MODEL, tmp_path / "full", {})
    assert (tmp_path / "cheap/model_config.json").read_text() == (tmp_path / "full/model_config.json").read_text()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = load_stripped(tmp_path / "cheap").eval().encode_image(images)
    assert torch.equal(got, full.encoder.eval().encode_image(images))


class RecordingEngine:
    """GradientAccumulation's engine surface, recording each micro-batch's image features in both passes."""

    def __init__(self, model: ItoModel) -> None:
        self.model, self.skipped_steps, self.features = model, 0, []

    def __call__(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(images, tokens)
        self.features.append(out["image_features_BMD"].detach())
        return out

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True) -> None:
        loss.backward()

    def step(self) -> None:
        pass


def test_accumulation_replays_each_micro_batch_with_the_same_patches():
    model = ItoModel(MODEL, CHEAP).train()
    engine = RecordingEngine(model)
    objective = build_objective("clip", fusion_weight=CHEAP.fusion_weight, fusion_scale=CHEAP.fusion_scale,
                                fusion_positives=CHEAP.fusion_positives, rank=0, world_size=1)
    accum = GradientAccumulation(engine, objective, steps=2)
    accum.forward(*inputs(batch=4))
    accum.backward()
    cached, live = engine.features[:2], engine.features[2:]
    assert all(torch.equal(a, b) for a, b in zip(cached, live, strict=True))
    assert not torch.equal(cached[0], cached[1])  # sanity: the two micro-batches differ


def analytic_and_counted(ito: ItoConfig) -> tuple[float, float]:
    """Training FLOPs per sample: flops.py's, and FlopCounterMode's of a train-mode step under MATH attention."""
    torch.manual_seed(0)
    model = ItoModel(MODEL, ito).train()
    images, tokens = inputs(views=ito.images, batch=2)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        out = model(images, tokens[..., :8])
        sum(v.sum() for v in out.values()).backward()
    return train_flops_per_sample(MODEL, ito, text_tokens=8), counter.get_total_flops() / 2


@pytest.mark.parametrize("options", [{"patch_dropout": 0.5}, {"patch_dropout": 0.3}, {"second_view_size": 16},
                                     {"second_view_size": 24, "patch_dropout": 0.5}])
@pytest.mark.parametrize("base", [ItoConfig(images=2, texts=1, fusion="none", fusion_weight=0.0), FULL])
def test_flops_count_the_options_as_flop_counter_mode_does(base: ItoConfig, options: dict):
    """With an option less without it, analytic == counted. (The offset both share with fusion is the pooled text row
    a token-read tower projects twice, which flops.py leaves out.)"""
    (analytic, counted), (base_analytic, base_counted) = analytic_and_counted(replace(base, **options)), \
        analytic_and_counted(base)
    assert analytic < base_analytic
    assert counted - analytic == base_counted - base_analytic
    if base.fusion == "none":
        assert counted == analytic  # no fusion: every matmul is in the count
