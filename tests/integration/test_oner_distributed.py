"""OneR's objective on 2 gloo ranks == one process on the joined batch (pattern: test_losses_distributed.py).

Each rank holds a shard of the global batch's model outputs; every loss scores local rows against
gathered columns (XMC's partner i + 1 crosses the rank boundary for the last local row). Checks:
    mean_r loss_r == loss_global                         (each part and the total)
    cat_r(grad_r) / world_size == grad_global            (every model output)
    mean_r grad_r(logit_scale) == grad_global
"""

import pytest
import torch
import torch.nn.functional as F
from fixtures.gloo_ranks import assert_matches_one_process, run_on_gloo_ranks, shard_rows

from ito_core.methods.oner.loss import LOSS_NAMES, OneRObjective

pytestmark = [pytest.mark.distributed, pytest.mark.integration]

WORLD_SIZE, LOCAL_BATCH, DIM = 2, 3, 8
FEATURES = ("image_features_BD", "text_features_BD", "cic_image_BD", "cic_text_BD", "joint_BD")
WEIGHTS = {"itc": 1.0, "xmc": 0.5, "cic": 2.0, "cmc": 1.5}


def global_outputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {k: F.normalize(torch.randn(LOCAL_BATCH * WORLD_SIZE, DIM, generator=gen), dim=-1) for k in FEATURES}


def run(features: dict[str, torch.Tensor], *, rank: int, world_size: int):
    """Every loss part, and the gradients of the total w.r.t. the features and the scale."""
    leaves = {k: v.clone().requires_grad_() for k, v in features.items()}
    scale = torch.tensor(6.0, requires_grad=True)
    losses = OneRObjective(weights=WEIGHTS, rank=rank, world_size=world_size)({**leaves, "logit_scale": scale})
    losses["loss"].backward()
    parts = {k: v.detach() for k, v in losses.items() if k.endswith("loss")}
    return parts, {k: v.grad for k, v in leaves.items()}, scale.grad


def on_rank(rank: int, world_size: int):
    return run(shard_rows(global_outputs(), rank, world_size), rank=rank, world_size=world_size)


@pytest.mark.timeout(120)
def test_two_rank_gloo_matches_single_process():
    per_rank = run_on_gloo_ranks(on_rank, WORLD_SIZE)
    reference = run(global_outputs(), rank=0, world_size=1)
    ref_parts, ref_grads, _ = reference
    assert set(ref_parts) == {"loss", *(f"{n}_loss" for n in LOSS_NAMES)}
    for key, ref in ref_grads.items():
        assert ref.abs().sum() > 0, key
    assert_matches_one_process(per_rank, reference, "oner")
