"""Activation checkpointing from the outside: same parameter names, same outputs, same gradients."""

from __future__ import annotations

import torch

from ito_core.activation_checkpointing import apply_activation_checkpointing
from ito_core.config import ItoConfig, ModelConfig
from ito_core.models.ito import ItoModel

MODEL = ModelConfig(name="unit", embed_dim=16, image_size=16, patch_size=8, vision_width=16, vision_layers=2,
                    vision_heads=2, context_length=8, vocab_size=64, text_width=16, text_layers=3, text_heads=2)
ITO = ItoConfig(images=2, texts=1, fusion="transformer", fusion_depth=2, fusion_heads=2)


def loss_and_grads(checkpointed: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    torch.manual_seed(0)
    model = ItoModel(MODEL, ITO)
    if checkpointed:
        assert apply_activation_checkpointing(model) == 2 + 3 + 2  # vision + text + fusion blocks
        assert apply_activation_checkpointing(model) == 0  # already wrapped
    images = torch.randn(4, 2, 3, 16, 16)
    tokens = torch.randint(1, 63, (4, 1, 8))
    tokens[..., 4] = 63
    out = model(images, tokens)
    loss = sum(v.float().sum() for v in out.values())
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}, list(model.state_dict())


def test_checkpointed_model_has_the_same_names_loss_and_gradients() -> None:
    plain_loss, plain_grads, plain_keys = loss_and_grads(checkpointed=False)
    ckpt_loss, ckpt_grads, ckpt_keys = loss_and_grads(checkpointed=True)
    assert ckpt_keys == plain_keys  # checkpoints and stripping see the same model
    assert torch.equal(ckpt_loss, plain_loss)
    for name, grad in plain_grads.items():
        assert torch.equal(ckpt_grads[name], grad), name
