"""2-process gloo parity: gathered losses on shards == single-process loss on the global batch.

Each rank takes its shard of a global batch, computes the loss with rank/world_size set and runs
backward. All-gather's backward sums every rank's contribution onto the owner of the rows, and
DDP / DeepSpeed then average parameter gradients over ranks; so the check is:
    mean_r loss_r == loss_global
    cat_r(grad_r) / world_size == grad_global            (input features)
    mean_r grad_r(logit_scale, logit_bias) == grad_global (shared parameters)
"""

import pytest
import torch
import torch.nn.functional as F
from fixtures.gloo_ranks import assert_matches_one_process, run_on_gloo_ranks, shard_rows

from ito_core.losses import ClipLoss, FusionLoss, ItoObjective, MultiAlignLoss, SigLipLoss

pytestmark = [pytest.mark.distributed, pytest.mark.integration]

WORLD_SIZE = 2
LOCAL_BATCH = 4
CASES = ("clip", "siglip", "multi_clip", "fusion", "ito_released")


def global_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    global_batch = LOCAL_BATCH * WORLD_SIZE
    return {
        "img_BD": F.normalize(torch.randn(global_batch, 16, generator=gen), dim=-1),
        "txt_BD": F.normalize(torch.randn(global_batch, 16, generator=gen), dim=-1),
        "img_BMD": F.normalize(torch.randn(global_batch, 2, 16, generator=gen), dim=-1),
        "txt_BND": F.normalize(torch.randn(global_batch, 3, 16, generator=gen), dim=-1),
        "fused_BKD": F.normalize(torch.randn(global_batch, 3, 16, generator=gen), dim=-1),
        "fused_B6D": F.normalize(torch.randn(global_batch, 6, 16, generator=gen), dim=-1),  # M=2 views x N=3
    }


def run_case(case: str, inputs: dict[str, torch.Tensor], *, rank: int, world_size: int):
    """Loss and gradients (inputs, then logit_scale, logit_bias) for one case on given inputs."""
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    scale = torch.tensor(5.0, requires_grad=True)
    bias = torch.tensor(-3.0, requires_grad=True)
    if case == "clip":
        used = [leaves["img_BD"], leaves["txt_BD"]]
        loss = ClipLoss(rank=rank, world_size=world_size)(*used, scale)
    elif case == "siglip":
        used = [leaves["img_BD"], leaves["txt_BD"]]
        loss = SigLipLoss(rank=rank, world_size=world_size)(*used, scale, bias)
    elif case == "multi_clip":
        used = [leaves["img_BMD"], leaves["txt_BND"]]
        pair = ClipLoss(rank=rank, world_size=world_size)
        loss = MultiAlignLoss(pair)(*used, scale)["align_loss"]
    elif case == "fusion":
        used = [leaves["fused_BKD"]]
        loss = FusionLoss(rank=rank, world_size=world_size)(*used, scale)["fusion_loss"]
    else:  # ITO as released: the live scale in the fusion loss, each view's fused vectors averaged over captions
        used = [leaves["img_BMD"], leaves["txt_BND"], leaves["fused_B6D"]]
        objective = ItoObjective(ClipLoss(rank=rank, world_size=world_size), fusion_weight=2.0, rank=rank,
                                 world_size=world_size)
        out = {"image_features_BMD": used[0], "text_features_BND": used[1], "fused_BKD": used[2], "logit_scale": scale}
        loss = objective(out)["loss"]
    loss.backward()
    zero = torch.tensor(0.0)
    params = [scale.grad, zero if bias.grad is None else bias.grad]
    return loss.detach(), [t.grad for t in used], params


def on_rank(rank: int, world_size: int):
    shards = shard_rows(global_inputs(), rank, world_size)
    return {case: run_case(case, shards, rank=rank, world_size=world_size) for case in CASES}


@pytest.mark.timeout(120)
def test_two_rank_gloo_matches_single_process():
    per_rank = run_on_gloo_ranks(on_rank, WORLD_SIZE)
    inputs = global_inputs()
    for case in CASES:
        assert_matches_one_process([r[case] for r in per_rank], run_case(case, inputs, rank=0, world_size=1), case)
