"""Gradient accumulation for contrastive losses: accumulated == full batch, for the loss and for
every gradient (logit scale included), on a tiny ITO model in float64 with a stand-in engine that
does what DeepSpeed does with gradients: backward adds them up, step() does nothing until read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ito_core.accumulation import GradientAccumulation, split_gradient
from ito_core.config import ItoConfig, LossConfig, ModelConfig, RunConfig
from ito_core.methods import build_model, build_objective

MODEL = ModelConfig(name="unit", embed_dim=16, image_size=16, patch_size=8, vision_width=16, vision_layers=1,
                    vision_heads=2, context_length=8, vocab_size=64, text_width=16, text_layers=1, text_heads=2)
EOT = MODEL.vocab_size - 1


class SummingEngine:
    """The engine surface GradientAccumulation uses, without DeepSpeed: gradients accumulate in .grad."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.steps, self.skipped_steps = model, 0, 0

    def __call__(self, images_BMCHW: torch.Tensor, tokens_BNL: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images_BMCHW, tokens_BNL)

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True) -> None:
        assert not scale_wrt_gas, "each micro-batch loss is the full-batch loss: DeepSpeed must not divide it"
        loss.backward()

    def step(self) -> None:
        self.steps += 1


def batch(size: int, *, views: int, texts: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(size, views, 3, MODEL.image_size, MODEL.image_size, generator=gen, dtype=torch.float64)
    tokens = torch.randint(1, EOT, (size, texts, MODEL.context_length), generator=gen)
    tokens[..., 5] = EOT  # EOT (the largest id) ends every caption
    return images, tokens


def run(cfg: RunConfig, steps: int, size: int = 8) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(cfg).double()
    engine = SummingEngine(model)
    accum = GradientAccumulation(engine, build_objective(cfg, model, rank=0, world_size=1), steps=steps)
    losses = accum.forward(*batch(size, views=cfg.ito.images, texts=cfg.ito.texts))
    accum.backward()
    assert engine.steps == steps
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize(("loss", "images", "texts", "fusion"), [
    ("clip", 2, 1, "transformer"), ("clip", 1, 2, "none"), ("siglip", 2, 2, "transformer")])
@pytest.mark.parametrize("steps", [2, 4])
def test_accumulated_step_equals_full_batch(loss: str, images: int, texts: int, fusion: str, steps: int) -> None:
    cfg = RunConfig(model=MODEL, ito=ItoConfig(images=images, texts=texts, fusion=fusion, fusion_heads=2),
                    loss=LossConfig(name=loss))
    full_losses, full_grads = run(cfg, steps=1)
    acc_losses, acc_grads = run(cfg, steps=steps)
    assert full_losses.keys() == acc_losses.keys()
    for key in full_losses:
        torch.testing.assert_close(acc_losses[key], full_losses[key], rtol=1e-12, atol=1e-12)
    assert full_grads.keys() == acc_grads.keys()
    assert "encoder.logit_scale" in full_grads  # counted once, not `steps` times as in OpenCLIP
    for name in full_grads:
        torch.testing.assert_close(acc_grads[name], full_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def test_averaging_micro_batch_losses_is_not_the_full_batch_loss() -> None:
    """The trap the feature cache avoids: each half sees 3 negatives per sample instead of 7."""
    cfg = RunConfig(model=MODEL, ito=ItoConfig(images=2, texts=1, fusion="none"))
    torch.manual_seed(0)
    model = build_model(cfg).double()
    objective = build_objective(cfg, model, rank=0, world_size=1)
    images, tokens = batch(8, views=2, texts=1)
    with torch.no_grad():
        full = objective(model(images, tokens))["loss"]
        halves = [objective(model(i, t))["loss"] for i, t in zip(images.chunk(2), tokens.chunk(2), strict=True)]
    assert abs(torch.stack(halves).mean() - full) > 0.1


def test_split_gradient_keeps_the_value_and_divides_the_gradient() -> None:
    x = torch.tensor(3.0, requires_grad=True)
    y = split_gradient(x * 2, 4)
    y.backward()
    assert y.item() == 6.0 and x.grad.item() == 0.5
