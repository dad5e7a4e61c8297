"""OneR's four losses against naive float64 loops written from their definitions (values and gradients).

Shape suffixes: B batch, D joint dim.
"""

import pytest
import torch
import torch.nn.functional as F

from ito_core.methods.oner.loss import LOSS_NAMES, OneRObjective

B, D = 6, 8
OUT_KEYS = ("image_features_BD", "text_features_BD", "cic_image_BD", "cic_text_BD", "joint_BD")


def outputs(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {key: F.normalize(torch.randn(B, D, generator=gen, dtype=torch.float64), dim=-1) for key in OUT_KEYS}
    out["logit_scale"] = torch.tensor(7.0, dtype=torch.float64)
    return out


# ---- naive references: one scalar at a time, float64 ------------------------------------------------------


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / torch.sqrt(sum(x * x for x in v))


def midpoint(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return unit((a + b) / 2)


def naive_infonce(q: list[torch.Tensor], k: list[torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """(1/2n) sum_i [-log softmax_j(t q_i.k_j)[i] - log softmax_j(t k_i.q_j)[i]]."""
    n = len(q)
    total = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        for rows, cols in ((q, k), (k, q)):
            logits = [t * torch.dot(rows[i], cols[j]) for j in range(n)]
            total = total - (logits[i] - torch.log(sum(torch.exp(z) for z in logits)))
    return total / (2 * n)


def naive(name: str, out: dict[str, torch.Tensor]) -> torch.Tensor:
    img, txt, t = out["image_features_BD"], out["text_features_BD"], out["logit_scale"]
    n = img.shape[0]
    if name == "itc":
        return naive_infonce([img[i] for i in range(n)], [txt[i] for i in range(n)], t)
    if name == "xmc":  # query: image i with caption i+1; key: image i+1 with caption i
        q = [midpoint(img[i], txt[(i + 1) % n]) for i in range(n)]
        k = [midpoint(img[(i + 1) % n], txt[i]) for i in range(n)]
        return naive_infonce(q, k, t)
    keys = [midpoint(img[i], txt[i]) for i in range(n)]
    if name == "cic":
        cic_img, cic_txt = out["cic_image_BD"], out["cic_text_BD"]
        return naive_infonce([midpoint(cic_img[i], cic_txt[i]) for i in range(n)], keys, t)
    assert name == "cmc"
    return naive_infonce([out["joint_BD"][i] for i in range(n)], keys, t)


def leaves(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_() for k, v in out.items()}


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_each_loss_matches_naive_loop_values_and_gradients(name):
    weights = {n: float(n == name) for n in LOSS_NAMES}
    ours_in, ref_in = leaves(outputs(seed=1)), leaves(outputs(seed=1))
    ours = OneRObjective(weights=weights)(ours_in)
    assert set(ours) == {"loss", f"{name}_loss", "logit_scale"}
    ref = naive(name, ref_in)
    assert ours["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    ours["loss"].backward()
    ref.backward()
    used = [k for k in ref_in if ref_in[k].grad is not None]
    assert "logit_scale" in used and len(used) >= 2
    for key in ref_in:
        if ref_in[key].grad is None:
            assert ours_in[key].grad is None or not ours_in[key].grad.any(), key
        else:
            torch.testing.assert_close(ours_in[key].grad, ref_in[key].grad, rtol=0, atol=1e-6, msg=key)


def test_total_is_the_weighted_sum_and_zero_weights_are_skipped():
    out = outputs(seed=2)
    weights = {"itc": 1.0, "xmc": 0.5, "cic": 2.0, "cmc": 0.0}
    losses = OneRObjective(weights=weights)(out)
    assert "cmc_loss" not in losses
    expected = sum(weights[n] * naive(n, out) for n in ("itc", "xmc", "cic"))
    assert losses["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    # CMC off: the model need not produce its joint output.
    del out["joint_BD"]
    OneRObjective(weights=weights)(out)


def test_xmc_negatives_sharing_a_modality_cost_more_than_matching_modalities():
    """The point of XMC: with every caption equal to its image (no modality gap) the loss is lower than
    with captions drawn independently, though the mixtures of the sample itself are positives in both."""
    out = outputs(seed=3)
    gapless = {**out, "text_features_BD": out["image_features_BD"]}
    xmc = OneRObjective(weights={n: float(n == "xmc") for n in LOSS_NAMES})
    assert xmc(gapless)["loss"] < xmc(out)["loss"]
