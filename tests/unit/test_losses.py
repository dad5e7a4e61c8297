"""ito_core.losses against naive loop references written from the papers, plus invariants.

Shape suffixes as in ito_core/losses.py: B batch, M image views, N captions, K fused vectors, D dim.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from ito_core.config import ItoConfig
from ito_core.losses import (
    ALIGN_LOSSES,
    ClipLoss,
    FusionLoss,
    MultiAlignLoss,
    SigLipLoss,
    build_align_loss,
    build_objective,
    init_logit_bias,
)

SCALE = torch.tensor(1 / 0.07)
BIAS = torch.tensor(-10.0)


def unit(*shape: int, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1).to(dtype)


# ---- naive references, one scalar at a time, in float64 ----------------------------------------


def naive_clip(img_BD, txt_BD, scale, bias=None) -> float:
    img, txt, t = img_BD.double(), txt_BD.double(), float(scale)
    b = 0.0 if bias is None else float(bias)
    batch = img.shape[0]

    def neg_log_softmax(rows, cols, i):  # -log p(column i | row i)
        logits = [t * float(rows[i] @ cols[j]) + b for j in range(batch)]
        return -(logits[i] - math.log(sum(math.exp(z) for z in logits)))

    i2t = sum(neg_log_softmax(img, txt, i) for i in range(batch)) / batch
    t2i = sum(neg_log_softmax(txt, img, i) for i in range(batch)) / batch
    return (i2t + t2i) / 2


def naive_siglip(img_BD, txt_BD, scale, bias) -> float:
    img, txt, t, b = img_BD.double(), txt_BD.double(), float(scale), float(bias)
    batch = img.shape[0]
    total = 0.0
    for i in range(batch):
        for j in range(batch):
            z = 1.0 if i == j else -1.0
            total += -math.log(1 / (1 + math.exp(-z * (t * float(img[i] @ txt[j]) + b))))
    return total / batch


def naive_simclr(fused_B2D, scale) -> float:
    """SimCLR Algorithm 1: z_{2k-1}, z_{2k} are the two views of sample k (0-based here)."""
    z = fused_B2D.double().reshape(-1, fused_B2D.shape[-1])
    tau, two_n = 1 / float(scale), z.shape[0]

    def ell(i, j):
        sim = [float(z[i] @ z[k]) / tau for k in range(two_n)]
        return -(sim[j] - math.log(sum(math.exp(sim[k]) for k in range(two_n) if k != i)))

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(two_n // 2)) / two_n


def naive_supcon(fused_BKD, scale) -> float:
    """SupCon L_out with labels = sample index: -mean over positives of log p, mean over anchors."""
    batch, k, _ = fused_BKD.shape
    z = fused_BKD.double().reshape(batch * k, -1)
    t, total = float(scale), 0.0
    for a in range(batch * k):
        logits = {c: t * float(z[a] @ z[c]) for c in range(batch * k) if c != a}
        log_denominator = math.log(sum(math.exp(v) for v in logits.values()))
        positives = [c for c in logits if c // k == a // k]
        total += -sum(logits[p] - log_denominator for p in positives) / len(positives)
    return total / (batch * k)


# ---- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [None, BIAS])
def test_clip_matches_naive(bias):
    img_BD, txt_BD = unit(6, 8, seed=1), unit(6, 8, seed=2)
    loss = ClipLoss()(img_BD, txt_BD, SCALE, bias)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(naive_clip(img_BD, txt_BD, SCALE, bias), rel=1e-5)


def test_siglip_matches_naive():
    img_BD, txt_BD = unit(6, 8, seed=1), unit(6, 8, seed=2)
    loss = SigLipLoss()(img_BD, txt_BD, torch.tensor(10.0), BIAS)
    assert loss.item() == pytest.approx(naive_siglip(img_BD, txt_BD, 10.0, BIAS), rel=1e-5)


def test_fusion_k2_is_simclr_nt_xent():
    fused_BKD = unit(5, 2, 8, seed=3)
    loss = FusionLoss()(fused_BKD, SCALE)["fusion_loss"]
    assert loss.item() == pytest.approx(naive_simclr(fused_BKD, SCALE), rel=1e-5)


def test_fusion_k3_is_supcon():
    fused_BKD = unit(4, 3, 8, seed=4)
    loss = FusionLoss()(fused_BKD, torch.tensor(5.0))["fusion_loss"]
    assert loss.item() == pytest.approx(naive_supcon(fused_BKD, 5.0), rel=1e-5)


# ---- multiple alignment --------------------------------------------------------------------------


def test_multi_align_m1_n1_is_clip_bitwise():
    img_BMD, txt_BND = unit(8, 1, 16, seed=5), unit(8, 1, 16, seed=6)
    multi = MultiAlignLoss(ClipLoss())(img_BMD, txt_BND, SCALE)["align_loss"]
    single = ClipLoss()(img_BMD[:, 0], txt_BND[:, 0], SCALE)
    assert torch.equal(multi, single)


@pytest.mark.parametrize("name", sorted(ALIGN_LOSSES))
def test_multi_align_is_mean_over_pairs(name):
    img_BMD, txt_BND = unit(8, 2, 16, seed=7), unit(8, 3, 16, seed=8)
    pair = build_align_loss(name, rank=0, world_size=1)
    multi = MultiAlignLoss(pair)(img_BMD, txt_BND, SCALE, BIAS)["align_loss"]
    pairs = [pair(img_BMD[:, m], txt_BND[:, n], SCALE, BIAS) for m in range(2) for n in range(3)]
    torch.testing.assert_close(multi, torch.stack(pairs).mean())


@pytest.mark.parametrize("fused", [False, True])
def test_ito_objective_at_one_view_and_lambda_zero_is_clip_bitwise(fused):
    """L = L_align + lambda * L_fusion is CLIP's InfoNCE at M = 1, lambda = 0: with one caption and no fused
    vectors, or with that caption twice (N = 2: the mean of two equal pair losses) and K = M x N = 2 fused vectors."""
    texts = 2 if fused else 1
    ito = ItoConfig(images=1, texts=texts, fusion="transformer", fusion_weight=0.0, fusion_positives="supcon")
    out = {"image_features_BMD": unit(8, 1, 16, seed=5),
           "text_features_BND": unit(8, 1, 16, seed=6).repeat(1, texts, 1), "logit_scale": SCALE,
           **({"fused_BKD": unit(8, 2, 16, seed=7)} if fused else {})}
    losses = build_objective("clip", fusion_weight=ito.fusion_weight, fusion_positives=ito.fusion_positives, rank=0,
                             world_size=1)(out)
    clip = ClipLoss()(out["image_features_BMD"][:, 0], out["text_features_BND"][:, 0], SCALE)
    assert torch.equal(losses["loss"], clip) and torch.equal(losses["align_loss"], clip)
    assert ("fusion_loss" in losses) == fused


def test_ito_objective_adds_lambda_times_the_fusion_loss():
    out = {"image_features_BMD": unit(8, 2, 16, seed=1), "text_features_BND": unit(8, 1, 16, seed=2),
           "logit_scale": SCALE, "fused_BKD": unit(8, 2, 16, seed=3)}
    losses = build_objective("clip", fusion_weight=2.0, rank=0, world_size=1)(out)
    fusion = FusionLoss()(out["fused_BKD"], SCALE)["fusion_loss"]
    torch.testing.assert_close(losses["loss"], losses["align_loss"] + 2.0 * fusion, rtol=0, atol=0)


def naive_released_fusion_loss(fused_BMND: torch.Tensor, scale: float) -> torch.Tensor:
    """ITO's released fusion loss, written as a loop: each view's fused vectors averaged over the captions and
    renormalised, then NT-Xent over the 2B view vectors (positive: the other view of the same sample)."""
    B = fused_BMND.shape[0]
    views = [fused_BMND[b, m].mean(0) for m in range(2) for b in range(B)]  # index m * B + b
    views = [v / v.norm() for v in views]
    total = 0.0
    for i in range(2 * B):
        positive = (i + B) % (2 * B)
        logits = [scale * float(views[i] @ views[j]) for j in range(2 * B) if j != i]
        log_norm = math.log(sum(math.exp(x) for x in logits))
        total += log_norm - scale * float(views[i] @ views[positive])
    return torch.tensor(total / (2 * B), dtype=torch.float64)


def test_released_fusion_positives_average_each_views_captions_then_nt_xent():
    """ito.fusion_positives=view_mean (the default) is ITO's code: 2 views x 2 captions -> 2-view NT-Xent."""
    fused_BMND = unit(6, 4, 16, seed=11).double().view(6, 2, 2, 16)
    scale = torch.tensor(7.0, dtype=torch.float64)
    objective = build_objective("clip", fusion_weight=2.0, rank=0, world_size=1)
    out = {"image_features_BMD": unit(6, 2, 16, seed=1).double(), "text_features_BND": unit(6, 2, 16, seed=2).double(),
           "logit_scale": scale, "fused_BKD": fused_BMND.flatten(1, 2)}
    torch.testing.assert_close(objective(out)["fusion_loss"].double(), naive_released_fusion_loss(fused_BMND, 7.0),
                               rtol=1e-6, atol=1e-6)
    supcon = build_objective("clip", fusion_weight=2.0, fusion_positives="supcon",
                             rank=0, world_size=1)(out)["fusion_loss"]
    torch.testing.assert_close(supcon, FusionLoss()(out["fused_BKD"], scale)["fusion_loss"], rtol=0, atol=0)


def test_view_mean_and_supcon_agree_with_one_caption():
    out = {"image_features_BMD": unit(8, 2, 16, seed=1), "text_features_BND": unit(8, 1, 16, seed=2),
           "logit_scale": SCALE, "fused_BKD": unit(8, 2, 16, seed=3)}
    losses = [build_objective("clip", fusion_weight=2.0, fusion_positives=p, rank=0, world_size=1)(out)
              for p in ("view_mean", "supcon")]
    torch.testing.assert_close(losses[0]["loss"], losses[1]["loss"])


@pytest.mark.parametrize(("fusion_scale", "trains_scale"), [("live", True), ("detached", False)])
def test_fusion_loss_trains_the_logit_scale_only_when_live(fusion_scale, trains_scale):
    """ITO's code passes the live scale to the fusion loss, so it also moves the temperature."""
    log_scale = torch.tensor(2.0, requires_grad=True)
    out = {"image_features_BMD": unit(8, 2, 16, seed=1), "text_features_BND": unit(8, 1, 16, seed=2),
           "logit_scale": log_scale.exp(), "fused_BKD": unit(8, 2, 16, seed=3)}
    objective = build_objective("clip", fusion_weight=2.0, fusion_scale=fusion_scale, rank=0, world_size=1)
    (grad_total,) = torch.autograd.grad(objective(out)["loss"], log_scale, retain_graph=True)
    (grad_align,) = torch.autograd.grad(objective(out)["align_loss"], log_scale)
    assert (not torch.allclose(grad_total, grad_align)) == trains_scale


def test_only_siglip_gives_the_model_a_logit_bias():
    assert init_logit_bias("clip", siglip_init_bias=-10.0) is None
    assert init_logit_bias("siglip", siglip_init_bias=-7.0) == -7.0


# ---- invariants ----------------------------------------------------------------------------------


def test_batch_permutation_leaves_losses_unchanged():
    img_BMD, txt_BND, fused_BKD = unit(8, 2, 16, seed=9), unit(8, 2, 16, seed=10), unit(8, 4, 16, seed=11)
    perm_B = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    for pair in (ClipLoss(), SigLipLoss()):
        a = MultiAlignLoss(pair)(img_BMD, txt_BND, SCALE, BIAS)["align_loss"]
        b = MultiAlignLoss(pair)(img_BMD[perm_B], txt_BND[perm_B], SCALE, BIAS)["align_loss"]
        torch.testing.assert_close(a, b)
    a = FusionLoss()(fused_BKD, SCALE)["fusion_loss"]
    torch.testing.assert_close(a, FusionLoss()(fused_BKD[perm_B], SCALE)["fusion_loss"])


def test_clip_zero_scale_is_log_batch():
    loss = ClipLoss()(unit(8, 16, seed=12), unit(8, 16, seed=13), torch.tensor(0.0))
    assert loss.item() == pytest.approx(math.log(8), rel=1e-6)


def test_perfect_alignment_with_huge_scale_is_near_zero():
    feats_BD = torch.eye(8, 16)  # orthonormal rows: positives score 1, negatives 0
    scale = torch.tensor(100.0)
    assert ClipLoss()(feats_BD, feats_BD, scale).item() < 1e-6
    assert SigLipLoss()(feats_BD, feats_BD, scale, torch.tensor(-50.0)).item() < 1e-6
    fused_BKD = feats_BD[:, None].expand(8, 2, 16)
    assert FusionLoss()(fused_BKD, scale)["fusion_loss"].item() < 1e-6
    # With K > 2 identical positives the SupCon-style optimum is log(K - 1), not 0.
    fused_BKD = feats_BD[:, None].expand(8, 3, 16)
    assert FusionLoss()(fused_BKD, scale)["fusion_loss"].item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_finite_and_float32_loss(dtype):
    img_BMD = unit(8, 2, 16, seed=14, dtype=dtype).requires_grad_()
    txt_BND = unit(8, 2, 16, seed=15, dtype=dtype).requires_grad_()
    fused_BKD = unit(8, 4, 16, seed=16, dtype=dtype).requires_grad_()
    scale, bias = torch.tensor(10.0, requires_grad=True), torch.tensor(-10.0, requires_grad=True)
    losses = [
        MultiAlignLoss(ClipLoss())(img_BMD, txt_BND, scale)["align_loss"],
        MultiAlignLoss(SigLipLoss())(img_BMD, txt_BND, scale, bias)["align_loss"],
        FusionLoss()(fused_BKD, scale)["fusion_loss"],
    ]
    assert all(loss.dtype == torch.float32 for loss in losses)
    sum(losses).backward()
    for tensor in (img_BMD, txt_BND, fused_BKD, scale, bias):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()


def test_fixed_seed_values():
    """Numerical record (STYLE: show numerical proof); update only with a stated reason."""
    torch.manual_seed(0)
    img_BMD = F.normalize(torch.randn(8, 2, 16), dim=-1)
    txt_BND = F.normalize(torch.randn(8, 2, 16), dim=-1)
    fused_BKD = F.normalize(torch.randn(8, 4, 16), dim=-1)
    align = MultiAlignLoss(ClipLoss())(img_BMD, txt_BND, SCALE)["align_loss"]
    siglip = MultiAlignLoss(SigLipLoss())(img_BMD, txt_BND, torch.tensor(10.0), BIAS)["align_loss"]
    fusion = FusionLoss()(fused_BKD, SCALE)["fusion_loss"]
    assert align.item() == pytest.approx(ALIGN_RECORD, rel=1e-5)
    assert siglip.item() == pytest.approx(SIGLIP_RECORD, rel=1e-5)
    assert fusion.item() == pytest.approx(FUSION_RECORD, rel=1e-5)


ALIGN_RECORD = 5.778660774230957
SIGLIP_RECORD = 10.102890014648438
FUSION_RECORD = 8.060129165649414


# ---- user errors ---------------------------------------------------------------------------------


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"loss.name='nope'; choose one of \['clip', 'siglip'\]"):
        build_align_loss("nope", rank=0, world_size=1)
    with pytest.raises(ValueError, match=r"ito.images \* ito.texts >= 2"):
        FusionLoss()(unit(4, 1, 8), SCALE)
    with pytest.raises(ValueError, match="logit_bias"):
        SigLipLoss()(unit(4, 8), unit(4, 8), SCALE)
    with pytest.raises(TypeError, match="PairLoss"):
        MultiAlignLoss(torch.nn.MSELoss())


def test_validation_offers_exactly_the_pair_losses_the_code_builds():
    """config.validation.LOSS_NAMES is the torch-free copy of ALIGN_LOSSES (validation must not import torch)."""
    from ito_core.config.validation import LOSS_NAMES
    from ito_core.losses import ALIGN_LOSSES

    assert tuple(ALIGN_LOSSES) == LOSS_NAMES
