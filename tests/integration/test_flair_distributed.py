"""FLAIR's losses on 2 gloo ranks == one process on the joined batch (pattern: test_losses_distributed.py).

Every rank pools its local images by all gathered sub-captions; all-gather's backward sums each rank's
contribution onto the owner of the texts and DeepSpeed averages parameter gradients over ranks, so:
    mean_r loss_r == loss_global
    cat_r(grad_r) / world_size == grad_global                      (image, patch and text inputs)
    mean_r grad_r == grad_global                                    (pooler weights, logit scale and bias)
"""

import pytest
import torch
from fixtures.gloo_ranks import assert_matches_one_process, run_on_gloo_ranks, shard_rows

from ito_core.methods.flair.model import FlairLoss, TextConditionedPool

pytestmark = [pytest.mark.distributed, pytest.mark.integration]

WORLD_SIZE, LOCAL_BATCH, NUM_TEXTS, PATCHES, DIM, HEADS = 2, 3, 2, 4, 8, 2
PARTS = ("tcs_loss", "mps_loss")


def global_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    batch = LOCAL_BATCH * WORLD_SIZE
    return {"image_BE": torch.randn(batch, DIM, generator=gen),
            "patches_BPE": torch.randn(batch, PATCHES, DIM, generator=gen),
            "text_BNE": torch.randn(batch, NUM_TEXTS, DIM, generator=gen)}


def build_pool() -> TextConditionedPool:
    torch.manual_seed(1)  # the same weights on every rank, as after DeepSpeed's broadcast
    return TextConditionedPool(DIM, HEADS)


def run_case(part: str, inputs: dict[str, torch.Tensor], *, rank: int, world_size: int):
    """Loss and gradients (inputs; pooler weights, logit scale, logit bias) of one loss part."""
    pool = build_pool()
    used = [v.clone().requires_grad_() for v in inputs.values()]
    scale = torch.tensor(5.0, requires_grad=True)
    bias = torch.tensor(-3.0, requires_grad=True)
    loss = FlairLoss(pool, rank=rank, world_size=world_size)(*used, scale, bias)[part]
    loss.backward()
    def grads(tensors):  # L_mps reads neither the patches nor the pooler
        return [torch.zeros_like(t) if t.grad is None else t.grad for t in tensors]

    return loss.detach(), grads(used), [*grads(pool.parameters()), scale.grad, bias.grad]


def on_rank(rank: int, world_size: int):
    shards = shard_rows(global_inputs(), rank, world_size)
    return {part: run_case(part, shards, rank=rank, world_size=world_size) for part in PARTS}


@pytest.mark.timeout(120)
def test_flair_losses_on_two_gloo_ranks_match_one_process():
    per_rank = run_on_gloo_ranks(on_rank, WORLD_SIZE)
    for part in PARTS:
        reference = run_case(part, global_inputs(), rank=0, world_size=1)
        assert_matches_one_process([r[part] for r in per_rank], reference, part)
        pooler_grads = reference[2][:-2]
        assert any(g.abs().sum() > 0 for g in pooler_grads) == (part == "tcs_loss")
