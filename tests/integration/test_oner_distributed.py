"""OneR's objective on 2 gloo ranks == one process on the joined batch (pattern: test_losses_distributed.py).

Each rank holds a shard of the global batch's model outputs; every loss scores local rows against
gathered columns (XMC's partner i + 1 crosses the rank boundary for the last local row). Checks:
    mean_r loss_r == loss_global                         (each part and the total)
    cat_r(grad_r) / world_size == grad_global            (every model output)
    mean_r grad_r(logit_scale) == grad_global
"""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from ito_core.methods.oner_loss import LOSS_NAMES, OneRObjective

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


def worker(rank: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        shard = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        result = run({k: v[shard] for k, v in global_outputs().items()}, rank=rank, world_size=WORLD_SIZE)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_rank_gloo_matches_single_process(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    per_rank = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    ref_parts, ref_grads, ref_scale_grad = run(global_outputs(), rank=0, world_size=1)
    assert set(ref_parts) == {"loss", *(f"{n}_loss" for n in LOSS_NAMES)}
    for key, ref in ref_parts.items():
        torch.testing.assert_close(torch.stack([p[0][key] for p in per_rank]).mean(), ref, msg=key)
    for key, ref in ref_grads.items():
        assert ref.abs().sum() > 0, key
        grad = torch.cat([p[1][key] for p in per_rank]) / WORLD_SIZE
        torch.testing.assert_close(grad, ref, msg=f"grad {key}")
    torch.testing.assert_close(torch.stack([p[2] for p in per_rank]).mean(), ref_scale_grad, msg="grad logit_scale")
