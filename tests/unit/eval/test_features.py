"""compute_features / eval_mode: normalised, batched, no gradients, the model's mode restored."""

import pytest
import torch
from torch import nn

from ito_core.eval.features import compute_features, eval_mode, model_device


def test_features_are_normalised_and_concatenated_without_grad() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.9)).train()
    inputs_ND = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    with eval_mode(model):
        features_ND = compute_features(model, inputs_ND.split(4), device=model_device(model))
    assert features_ND.shape == (10, 4) and not features_ND.requires_grad
    torch.testing.assert_close(features_ND.norm(dim=-1), torch.ones(10))
    # Dropout was off (eval mode), so the features are the linear layer's, normalised.
    expected_ND = model[0](inputs_ND)
    torch.testing.assert_close(features_ND, expected_ND / expected_ND.norm(dim=-1, keepdim=True))
    assert model.training


def test_eval_mode_restores_mode_after_an_error() -> None:
    model = nn.Linear(2, 2).eval()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert not model.training
    model.train()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training
