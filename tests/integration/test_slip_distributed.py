"""SLIP on 2 gloo ranks == one process on the joined batch: the SSL head (BatchNorm statistics over the global
batch) and the objective (CLIP InfoNCE + SimCLR NT-Xent, gathered with gradient).

Each rank runs the same head (same seed) on its shard, then the objective with rank/world_size set, and backward.
DeepSpeed averages parameter gradients over ranks, and all-gather's backward sums every rank's contribution onto
the owner of the rows, so:
    mean_r loss_r == loss_global
    cat_r(grad_r) / world_size == grad_global         (inputs: pooled SSL features, CLIP image/text features)
    mean_r grad_r(head parameters, logit_scale) == grad_global
"""

import pytest
import torch
import torch.nn.functional as F
from fixtures.gloo_ranks import assert_matches_one_process, run_on_gloo_ranks, shard_rows

from ito_core.methods.slip.model import SlipHead, SlipObjective

pytestmark = [pytest.mark.distributed, pytest.mark.integration]

WORLD_SIZE = 2
LOCAL_BATCH = 3
WIDTH, HIDDEN, SSL_DIM, EMBED = 12, 16, 6, 8


def global_inputs() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    batch = LOCAL_BATCH * WORLD_SIZE
    return {"pooled_BVD": 3 * torch.randn(batch, 2, WIDTH, generator=gen) + 1,
            "image_BMD": F.normalize(torch.randn(batch, 1, EMBED, generator=gen), dim=-1),
            "text_BND": F.normalize(torch.randn(batch, 1, EMBED, generator=gen), dim=-1)}


def run(inputs: dict[str, torch.Tensor], *, rank: int, world_size: int):
    """Losses, input gradients and parameter gradients (head, then logit scale) on given inputs."""
    torch.manual_seed(1)
    head = SlipHead(WIDTH, HIDDEN, SSL_DIM)
    leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    scale = torch.tensor(5.0, requires_grad=True)
    out = {"image_features_BMD": leaves["image_BMD"], "text_features_BND": leaves["text_BND"], "logit_scale": scale,
           "ssl_features_BVS": F.normalize(head(leaves["pooled_BVD"]), dim=-1)}
    losses = SlipObjective(temperature=0.1, ssl_weight=1.0, rank=rank, world_size=world_size)(out)
    losses["loss"].backward()
    named = {k: losses[k].detach() for k in ("loss", "align_loss", "ssl_loss")}
    return named, [t.grad for t in leaves.values()], [p.grad for p in head.parameters()] + [scale.grad]


def on_rank(rank: int, world_size: int):
    return run(shard_rows(global_inputs(), rank, world_size), rank=rank, world_size=world_size)


@pytest.mark.timeout(120)
def test_slip_two_gloo_ranks_match_one_process():
    per_rank = run_on_gloo_ranks(on_rank, WORLD_SIZE)
    assert_matches_one_process(per_rank, run(global_inputs(), rank=0, world_size=1), "slip")

