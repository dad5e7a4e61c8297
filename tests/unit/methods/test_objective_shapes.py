"""Every objective refuses inputs that do not fit together with one named error (``ShapeMismatch``, a ValueError)
naming the tensors, their shapes and what they must be; before these checks each case below either ran (a wrong
loss) or failed inside torch naming neither tensor. ``GlobalBatchNorm`` refuses a batch of one, as torch does.

Shape suffixes as in ito_core/losses.py and ito_core/methods: B batch, M image views, N captions, K fused vectors,
V SSL views, P patches, D/E joint dim, S SSL dim.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from ito_core.losses import ClipLoss, FusionLoss, ItoObjective, MultiAlignLoss, SigLipLoss
from ito_core.methods.flair.model import FlairObjective, TextConditionedPool
from ito_core.methods.oner.loss import LOSS_NAMES, OneRObjective
from ito_core.methods.slip.model import GlobalBatchNorm, SlipObjective
from ito_core.shapes import ShapeMismatch, check_shapes

SCALE, BIAS = torch.tensor(10.0), torch.tensor(-10.0)


def x(*shape: int) -> Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(0)), dim=-1)


def ito(**out: Tensor) -> dict[str, Tensor]:
    return ItoObjective(ClipLoss(), fusion_weight=1.0)({"logit_scale": SCALE, **out})


def slip(**out: Tensor) -> dict[str, Tensor]:
    return SlipObjective(temperature=0.1, ssl_weight=1.0)({"logit_scale": SCALE, **out})


def flair(**out: Tensor) -> dict[str, Tensor]:
    return FlairObjective(TextConditionedPool(16, 2))({"logit_scale": SCALE, "logit_bias": BIAS, **out})


def oner(**out: Tensor) -> dict[str, Tensor]:
    return OneRObjective(weights=dict.fromkeys(LOSS_NAMES, 1.0))({"logit_scale": SCALE, **out})


# (the call, the words the error must hold). The first four ran without error before.
CASES: dict[str, tuple[Callable[[], object], list[str]]] = {
    "siglip 4 images, 5 texts": (lambda: SigLipLoss()(x(4, 16), x(5, 16), SCALE, BIAS),
                                 ["SigLipLoss: text_features_BD has shape (5, 16)", "B dimension must be 4",
                                  "image_features_BD (4, 16)"]),
    "flair image batch 1, text batch 4": (
        lambda: flair(image_embed_BE=x(1, 16), patch_tokens_BPE=x(4, 9, 16), text_embed_BNE=x(4, 2, 16)),
        ["FlairLoss: patch_tokens_BPE has shape (4, 9, 16)", "B dimension must be 1", "image_embed_BE (1, 16)"]),
    "ito 3 fused rows, 4 images": (
        lambda: ito(image_features_BMD=x(4, 2, 16), text_features_BND=x(4, 1, 16), fused_BKD=x(3, 2, 16)),
        ["ItoObjective: fused_BKD has shape (3, 2, 16)", "B dimension must be 4 (the batch of image_features_BMD)"]),
    "slip 3 ssl rows, 4 images": (
        lambda: slip(image_features_BMD=x(4, 1, 16), text_features_BND=x(4, 1, 16), ssl_features_BVS=x(3, 2, 8)),
        ["SlipObjective: ssl_features_BVS has shape (3, 2, 8)", "B dimension must be 4"]),
    "ito fused vectors not one per view and caption": (
        lambda: ito(image_features_BMD=x(4, 2, 16), text_features_BND=x(4, 2, 16), fused_BKD=x(4, 3, 16)),
        ["ItoObjective: fused_BKD has shape (4, 3, 16)", "K dimension must be 4 (M x N = 2 x 2"]),
    "ito texts of another width": (
        lambda: ito(image_features_BMD=x(4, 2, 16), text_features_BND=x(4, 1, 8)),
        ["ItoObjective: text_features_BND has shape (4, 1, 8)", "D dimension must be 16"]),
    "clip with a views axis": (lambda: ClipLoss()(x(4, 2, 16), x(4, 16), SCALE),
                               ["ClipLoss: image_features_BD has shape (4, 2, 16)", "must have 2 dimensions [B, D]"]),
    "multi-align 4 images, 3 texts": (lambda: MultiAlignLoss(ClipLoss())(x(4, 2, 16), x(3, 2, 16), SCALE),
                                      ["MultiAlignLoss: text_features_BND has shape (3, 2, 16)"]),
    "fusion loss without a views axis": (lambda: FusionLoss()(x(4, 16), SCALE),
                                         ["FusionLoss: fused_BKD has shape (4, 16)", "[B, K, D]"]),
    "a logit scale per sample": (lambda: ClipLoss()(x(4, 16), x(4, 16), SCALE.repeat(4)),
                                 ["ClipLoss: logit_scale has shape (4,); it must hold one value"]),
    "oner cic features of 3 samples": (
        lambda: oner(image_features_BD=x(4, 16), text_features_BD=x(4, 16), cic_image_BD=x(3, 16),
                     cic_text_BD=x(4, 16), joint_BD=x(4, 16)),
        ["OneRObjective: cic_image_BD has shape (3, 16)", "B dimension must be 4"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_mismatched_inputs_fail_with_one_named_error(case: str) -> None:
    call, words = CASES[case]
    with pytest.raises(ShapeMismatch) as caught:
        call()
    assert isinstance(caught.value, ValueError) and len(str(caught.value).splitlines()) == 1
    for text in words:
        assert text in str(caught.value)


def test_matching_inputs_give_their_sizes_by_letter() -> None:
    assert check_shapes("t", {"K": (6, "M x N")}, image_BMD=x(4, 2, 16), fused_BKD=x(4, 6, 16)) == {
        "K": 6, "B": 4, "M": 2, "D": 16}


@pytest.mark.parametrize("training", [True, False])
def test_global_batch_norm_refuses_a_batch_of_one_as_torch_does_in_training(training: bool) -> None:
    """In eval too: without running statistics it always normalises by the batch's (the output would be the bias)."""
    one = torch.randn(1, 2, 8)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        nn.BatchNorm1d(8).train()(one[:, 0])
    with pytest.raises(ValueError, match=r"GlobalBatchNorm: a batch of 1 \(input shape \(1, 2, 8\)\).*train\.batch"):
        GlobalBatchNorm(8).train(training)(one)
    assert GlobalBatchNorm(8).train(training)(torch.randn(2, 2, 8)).shape == (2, 2, 8)
