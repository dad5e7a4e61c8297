"""SLIP's objective and head against naive float64 references written from the papers.

SimCLR (Chen et al. 2020, arXiv 2002.05709, Algorithm 1), as SLIP uses it (arXiv 2112.12750, Eq. 2):
for 2N vectors z (the two views of N samples, L2-normalised),
    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )
    L = 1 / (2N) sum_k [ l(2k-1, 2k) + l(2k, 2k-1) ]
"""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ito_core.methods.slip.model import GlobalBatchNorm, SlipHead, SlipObjective

TAU = 0.1
CLIP_SCALE = 1 / 0.07


def raw(*shape: int, seed: int) -> torch.Tensor:
    """Unnormalised float64 leaves: the model L2-normalises them, the papers' losses normalise inside."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_()


def cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum() / (u.norm() * v.norm())


def naive_simclr(aug1_BS: torch.Tensor, aug2_BS: torch.Tensor, tau: float) -> torch.Tensor:
    """The formula above, one scalar at a time (float64 torch scalars, so autograd gives the reference gradient)."""
    n = aug1_BS.shape[0]
    z = [v for k in range(n) for v in (aug1_BS[k], aug2_BS[k])]  # z_{2k-1}, z_{2k} = the views of sample k

    def ell(i, j):
        denominator = sum(torch.exp(cos(z[i], z[k]) / tau) for k in range(2 * n) if k != i)
        return -torch.log(torch.exp(cos(z[i], z[j]) / tau) / denominator)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(n)) / (2 * n)


def naive_clip(img_BD: torch.Tensor, txt_BD: torch.Tensor, scale: float) -> torch.Tensor:
    n = img_BD.shape[0]

    def nll(rows, cols, i):
        logits = [scale * cos(rows[i], cols[j]) for j in range(n)]
        return -(logits[i] - torch.log(sum(torch.exp(z) for z in logits)))

    return sum(nll(img_BD, txt_BD, i) + nll(txt_BD, img_BD, i) for i in range(n)) / (2 * n)


def slip_leaves(batch: int, seed: int) -> dict[str, torch.Tensor]:
    return {"image": raw(batch, 1, 8, seed=seed), "text": raw(batch, 1, 8, seed=seed + 1),
            "ssl": raw(batch, 2, 6, seed=seed + 2),
            "scale": torch.tensor(CLIP_SCALE, dtype=torch.float64, requires_grad=True)}


def model_outputs(leaves: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What SlipModel hands the objective: L2-normalised features and the exp'd CLIP scale."""
    return {"image_features_BMD": F.normalize(leaves["image"], dim=-1),
            "text_features_BND": F.normalize(leaves["text"], dim=-1),
            "ssl_features_BVS": F.normalize(leaves["ssl"], dim=-1), "logit_scale": leaves["scale"]}


def grads(loss: torch.Tensor, leaves: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, leaves))


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_ssl_loss_is_simclr_nt_xent_with_gradients(batch):
    leaves = slip_leaves(batch, seed=batch)
    losses = SlipObjective(temperature=TAU, ssl_weight=1.0)(model_outputs(leaves))
    ssl = leaves["ssl"]
    ref = naive_simclr(ssl[:, 0], ssl[:, 1], TAU)
    torch.testing.assert_close(losses["ssl_loss"].double(), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(grads(losses["ssl_loss"], [ssl])[0].double(), grads(ref, [ssl])[0], rtol=0, atol=1e-6)


def test_total_is_clip_plus_weighted_simclr_with_gradients():
    leaves = slip_leaves(4, seed=7)
    losses = SlipObjective(temperature=TAU, ssl_weight=0.5)(model_outputs(leaves))
    img, txt, ssl, scale = leaves["image"], leaves["text"], leaves["ssl"], leaves["scale"]
    clip = naive_clip(img[:, 0], txt[:, 0], scale)
    ref = clip + 0.5 * naive_simclr(ssl[:, 0], ssl[:, 1], TAU)
    torch.testing.assert_close(losses["align_loss"].double(), clip, rtol=0, atol=1e-6)
    torch.testing.assert_close(losses["loss"].double(), ref, rtol=0, atol=1e-6)
    for got, want in zip(grads(losses["loss"], list(leaves.values())), grads(ref, list(leaves.values())), strict=True):
        torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-6)
    assert not losses["logit_scale"].requires_grad


def test_ssl_loss_does_not_touch_the_clip_scale():
    """SimCLR runs at its own fixed temperature: the CLIP logit scale's gradient comes from the CLIP loss only."""
    leaves = slip_leaves(4, seed=3)
    with_ssl = SlipObjective(temperature=TAU, ssl_weight=1.0)(model_outputs(leaves))["loss"]
    without = SlipObjective(temperature=TAU, ssl_weight=0.0)(model_outputs(leaves))["loss"]
    torch.testing.assert_close(grads(with_ssl, [leaves["scale"]])[0], grads(without, [leaves["scale"]])[0])


def test_objective_has_no_parameters():
    assert list(SlipObjective(temperature=TAU, ssl_weight=1.0).parameters()) == []


def test_global_batch_norm_is_batch_norm_per_view_in_one_process():
    """Without a process group: torch's BatchNorm1d (training mode) on each view's batch, values and gradients."""
    x_BVC = torch.randn(6, 2, 5, dtype=torch.float64, requires_grad=True)
    ours = GlobalBatchNorm(5).double()
    ref = nn.BatchNorm1d(5, track_running_stats=False).double()
    with torch.no_grad():
        for bn in (ours, ref):
            bn.weight.copy_(torch.linspace(0.5, 2.0, 5))
            bn.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    target = torch.randn(6, 2, 5, dtype=torch.float64)
    y = ours(x_BVC)
    y_ref = torch.stack([ref(x_BVC[:, v]) for v in range(2)], dim=1)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    leaves = [x_BVC, ours.weight, ours.bias]
    ref_leaves = [x_BVC, ref.weight, ref.bias]
    for got, want in zip(grads((y * target).sum(), leaves), grads((y_ref * target).sum(), ref_leaves), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_head_is_slips_three_layer_mlp():
    head = SlipHead(12, 32, 7)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "GlobalBatchNorm", "ReLU", "Linear", "GlobalBatchNorm", "ReLU", "Linear"]
    assert [(m.in_features, m.out_features) for m in head if isinstance(m, nn.Linear)] == [(12, 32), (32, 32), (32, 7)]
    assert head(torch.randn(4, 2, 12)).shape == (4, 2, 7)


def test_global_batch_norm_keeps_float32_statistics_for_bf16():
    x = 50 + torch.randn(512, 2, 8)  # a large mean: bf16 sums of 512 rows would lose the variance
    bn = GlobalBatchNorm(8)
    y = bn.to(torch.bfloat16)(x.to(torch.bfloat16))
    assert y.dtype == torch.bfloat16
    ref = GlobalBatchNorm(8)(x.to(torch.bfloat16).float())
    torch.testing.assert_close(y.float(), ref, rtol=0, atol=0.02)
