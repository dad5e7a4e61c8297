"""OneR under exact contrastive gradient accumulation: accumulated == full batch (loss and every gradient),
in float64 with a stand-in engine that sums gradients as DeepSpeed does between steps."""

import pytest
import torch

from ito_core.accumulation import GradientAccumulation
from ito_core.config import ModelConfig
from ito_core.methods.oner.loss import LOSS_NAMES, OneRObjective
from ito_core.methods.oner.model import OneRModel

MODEL = ModelConfig(name="unit", embed_dim=16, image_size=16, patch_size=8, vision_width=16, vision_layers=1,
                    vision_heads=2, context_length=8, vocab_size=64)
EOT = MODEL.vocab_size - 1


class SummingEngine:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.skipped_steps = model, 0

    def __call__(self, images_BMCHW, tokens_BNL):
        return self.model(images_BMCHW, tokens_BNL)

    def backward(self, loss, scale_wrt_gas=True):
        assert not scale_wrt_gas
        loss.backward()

    def step(self):
        pass


def run(steps: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = OneRModel(MODEL, cic=True, cmc=True).double()
    objective = OneRObjective(weights=dict.fromkeys(LOSS_NAMES, 1.0))
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(8, 1, 3, 16, 16, generator=gen, dtype=torch.float64)
    tokens = torch.randint(1, EOT - 2, (8, 1, MODEL.context_length), generator=gen)
    tokens[..., 0] = MODEL.vocab_size - 2  # SOT
    tokens[..., 5] = EOT
    tokens[..., 6:] = 0
    accum = GradientAccumulation(SummingEngine(model), objective, steps=steps)
    losses = accum.forward(images, tokens)
    accum.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {k: v.detach() for k, v in losses.items()}, grads


@pytest.mark.parametrize("steps", [2, 4])
def test_accumulated_equals_full_batch(steps):
    full_losses, full_grads = run(1)
    losses, grads = run(steps)
    assert set(full_losses) == {"loss", "logit_scale", *(f"{n}_loss" for n in LOSS_NAMES)}
    for key, value in full_losses.items():
        torch.testing.assert_close(losses[key], value, msg=key)
    assert set(grads) == set(full_grads) and "encoder.logit_scale" in grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(grads[name], grad, msg=name)
