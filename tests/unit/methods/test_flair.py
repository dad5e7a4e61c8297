"""FLAIR (ito_core.methods.flair): the pooling module against torch's own multi-head attention (FLAIR's
``PureAttentionPoolingBlock``), L_tcs and L_mps against naive float64 loops written from the paper's formulas
(values and gradients), and what padding does not change.

Shape suffixes as in ito_core/methods/flair/model.py: B images, N sub-captions, J texts, P patches, E dim.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from ito_core.config import ModelConfig
from ito_core.methods.flair.model import (
    FlairLoss,
    FlairModel,
    FlairObjective,
    TextConditionedPool,
    load_pooler,
    save_pooler,
    sigmoid_labels,
)
from ito_core.models.dual_encoder import count_parameters
from ito_core.strip import encoder_state

E, HEADS, P = 16, 4, 5


def randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def pool_f64(seed: int = 0) -> TextConditionedPool:
    torch.manual_seed(seed)
    pool = TextConditionedPool(E, HEADS).double()
    with torch.no_grad():  # non-trivial LayerNorm affine parameters and biases
        for p in pool.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return pool


def torch_attention(pool: TextConditionedPool) -> torch.nn.MultiheadAttention:
    """FLAIR's ``nn.MultiheadAttention(E, heads, add_zero_attn=True)`` holding the pool's weights."""
    attn = torch.nn.MultiheadAttention(E, HEADS, batch_first=True, add_zero_attn=True).to(pool.in_proj_weight.dtype)
    attn.in_proj_weight, attn.in_proj_bias = pool.in_proj_weight, pool.in_proj_bias
    attn.out_proj = pool.out_proj
    return attn


def reference_pool(pool: TextConditionedPool, query_E: torch.Tensor, patches_PE: torch.Tensor) -> torch.Tensor:
    """FLAIR's PureAttentionPoolingBlock on one (text, image) pair: LN, then nn.MultiheadAttention(add_zero_attn)."""
    q, kv = pool.ln_q(query_E)[None, None], pool.ln_k(patches_PE)[None]
    return torch_attention(pool)(q, kv, pool.ln_v(patches_PE)[None], need_weights=False)[0][0, 0]


# ---- the pooling module -------------------------------------------------------------------------------


def test_pool_equals_torch_multihead_attention_per_pair():
    pool = pool_f64()
    queries_QE, patches_BPE = randn(7, E, seed=1), randn(3, P, E, seed=2)
    out_BQE = pool(queries_QE, patches_BPE)
    assert out_BQE.shape == (3, 7, E)
    for i in range(3):
        for q in range(7):
            torch.testing.assert_close(out_BQE[i, q], reference_pool(pool, queries_QE[q], patches_BPE[i]),
                                       rtol=1e-10, atol=1e-10)


def test_pool_has_about_one_million_parameters_at_b16_as_flairs_block():
    # nn.MultiheadAttention(512, 8): in_proj 3 x 512 x 512 + 3 x 512, out_proj 512 x 512 + 512; 3 LayerNorms.
    pool = TextConditionedPool(512, 8)
    assert count_parameters(pool) == 4 * 512 * 512 + 4 * 512 + 3 * 2 * 512 == 1_053_696
    torch_mha = torch.nn.MultiheadAttention(512, 8, batch_first=True, add_zero_attn=True)
    assert {k: v.shape for k, v in torch_mha.state_dict().items()} == {
        k: v.shape for k, v in pool.state_dict().items() if not k.startswith("ln_")}


def test_pool_heads_must_divide_the_dim():
    with pytest.raises(ValueError, match="method.flair_heads=5 must divide model.embed_dim=16"):
        TextConditionedPool(16, 5)


def test_other_queries_do_not_change_a_query_result():
    """Queries are independent rows: padding a chunk of texts with filler queries (as a batched eval may) or
    reordering them leaves every real query's pooled vector unchanged."""
    pool = pool_f64()
    queries_QE, patches_BPE = randn(4, E, seed=3), randn(2, P, E, seed=4)
    alone = pool(queries_QE, patches_BPE)
    padded = pool(torch.cat([queries_QE, torch.zeros(3, E, dtype=torch.float64)]), patches_BPE)
    torch.testing.assert_close(padded[:, :4], alone, rtol=0, atol=1e-12)
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(pool(queries_QE[perm], patches_BPE), alone[:, perm], rtol=0, atol=1e-12)


def test_the_zero_key_lets_a_text_attend_to_nothing():
    """add_zero_attn: with every patch key at zero, each of the P patches and the extra zero key/value get weight
    1 / (P + 1): the pooled vector is out_proj of the patch values' sum over P + 1 (without it: over P)."""
    pool = pool_f64()
    with torch.no_grad():
        pool.ln_k.weight.zero_()
        pool.ln_k.bias.zero_()
        pool.in_proj_bias[E:2 * E] = 0.0
    out_BQE = pool(randn(2, E, seed=5), randn(1, P, E, seed=6))
    # Every key scores 0, so weights are 1 / (P + 1) per patch and per zero key (whose value is 0).
    v_PE = F.linear(pool.ln_v(randn(1, P, E, seed=6)[0]), pool.in_proj_weight[2 * E:], pool.in_proj_bias[2 * E:])
    expected_E = pool.out_proj(v_PE.sum(0) / (P + 1))
    torch.testing.assert_close(out_BQE[0, 0], expected_E, rtol=1e-10, atol=1e-10)


# ---- the losses against the paper's formulas -----------------------------------------------------------


def naive_flair(pool, image_BE, patches_BPE, text_BNE, t, b) -> tuple[torch.Tensor, torch.Tensor]:
    """L_tcs and L_mps one pair at a time (arXiv 2412.03561, on this project's global batch):
    L = -1/(B N) sum_i sum_j log 1 / (1 + exp(z_ij (-t x_ij . y_j - b))), z_ij = 1 iff text j is image i's."""
    B, N = text_BNE.shape[:2]
    texts = [text_BNE[j // N, j % N] for j in range(B * N)]
    tcs = mps = 0.0
    for i in range(B):
        image = image_BE[i] / image_BE[i].norm()
        for j, text in enumerate(texts):
            z = 1.0 if j // N == i else -1.0
            text_unit = text / text.norm()
            pooled = reference_pool(pool, text, patches_BPE[i])
            pooled = pooled / pooled.norm()
            tcs = tcs - torch.log(1 / (1 + torch.exp(z * (-t * (pooled @ text_unit) - b))))
            mps = mps - torch.log(1 / (1 + torch.exp(z * (-t * (image @ text_unit) - b))))
    return tcs / (B * N), mps / (B * N)


def leaves(seed: int = 0, batch: int = 3, num_texts: int = 2) -> list[torch.Tensor]:
    return [randn(batch, E, seed=seed).requires_grad_(), randn(batch, P, E, seed=seed + 1).requires_grad_(),
            randn(batch, num_texts, E, seed=seed + 2).requires_grad_(),
            torch.tensor(7.0, dtype=torch.float64, requires_grad=True),
            torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)]


@pytest.mark.parametrize("part", ["tcs_loss", "mps_loss"])
def test_each_loss_and_its_gradients_match_the_naive_float64_loop(part):
    pool = pool_f64()
    inputs = leaves()
    loss = FlairLoss(pool)(*inputs)[part]
    grads = torch.autograd.grad(loss, [*inputs, *pool.parameters()], allow_unused=True)
    ref_inputs = [x.detach().clone().requires_grad_() for x in inputs]
    ref = naive_flair(pool, *ref_inputs)[0 if part == "tcs_loss" else 1]
    ref_grads = torch.autograd.grad(ref, [*ref_inputs, *pool.parameters()], allow_unused=True)
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6, abs=1e-6)
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g is None) == (r is None)
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-6)


def test_labels_mark_each_image_own_sub_captions_on_its_rank():
    labels_BJ = sigmoid_labels(2, 3, 12, rank=1, device=torch.device("cpu"))
    # rank 1 holds global images 2 and 3; their texts are columns 6..8 and 9..11.
    expected = -torch.ones(2, 12)
    expected[0, 6:9] = expected[1, 9:12] = 1.0
    assert torch.equal(labels_BJ, expected)


def test_objective_is_the_mean_of_the_two_losses_and_owns_no_parameters():
    pool = pool_f64()
    image_BE, patches_BPE, text_BNE, scale, bias = leaves()
    objective = FlairObjective(pool)
    out = objective({"image_embed_BE": image_BE, "patch_tokens_BPE": patches_BPE, "text_embed_BNE": text_BNE,
                     "logit_scale": scale, "logit_bias": bias})
    assert list(objective.parameters()) == []
    torch.testing.assert_close(out["loss"], (out["tcs_loss"] + out["mps_loss"]) / 2, rtol=0, atol=0)
    assert not out["logit_scale"].requires_grad


def test_zero_logits_cost_log2_per_pair():
    pool = pool_f64()
    image_BE, patches_BPE, text_BNE, _, _ = leaves()
    at_zero = FlairLoss(pool)(image_BE, patches_BPE, text_BNE, torch.tensor(0.0), torch.tensor(0.0))
    for value in at_zero.values():  # B x J = 3 x 6 pairs at log 2 each, over B N = 6
        assert value.item() == pytest.approx(3 * math.log(2), rel=1e-12)


# ---- the model: padding and the deployable part --------------------------------------------------------


TINY = ModelConfig(name="tiny", embed_dim=16, image_size=16, patch_size=8, vision_width=16, vision_layers=1,
                   vision_heads=2, context_length=12, vocab_size=64, text_width=16, text_layers=1, text_heads=2)


def tokens(batch: int, num_texts: int, length: int, *, seed: int) -> torch.Tensor:
    """Captions of 3..6 tokens, the EOT (largest id, 63) last, 0-padded to ``length``."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(batch, num_texts, length, dtype=torch.long)
    for b in range(batch):
        for n in range(num_texts):
            size = int(torch.randint(3, 7, (1,), generator=gen))
            out[b, n, :size - 1] = torch.randint(1, 63, (size - 1,), generator=gen)
            out[b, n, size - 1] = 63
    return out


def test_text_padding_changes_neither_the_queries_nor_the_loss():
    """The pooling's queries are EOT-pooled caption embeddings: captions padded to 6 or to 12 tokens give the
    same model outputs and the same FLAIR loss."""
    torch.manual_seed(0)
    model = FlairModel(TINY, heads=2, logit_bias=-10.0).eval()
    images_BMCHW = torch.randn(3, 1, 3, 16, 16)
    full_BNL = tokens(3, 2, 12, seed=1)
    with torch.no_grad():
        short = model(images_BMCHW, full_BNL[..., :6])
        full = model(images_BMCHW, full_BNL)
        objective = FlairObjective(model.flair_pool)
        torch.testing.assert_close(short["text_embed_BNE"], full["text_embed_BNE"], rtol=0, atol=1e-6)
        torch.testing.assert_close(objective(short)["loss"], objective(full)["loss"], rtol=0, atol=1e-6)


def test_model_outputs_and_deployable_keys():
    model = FlairModel(TINY, heads=2, logit_bias=-10.0)
    out = model(torch.randn(3, 1, 3, 16, 16), tokens(3, 2, 12, seed=0))
    assert out["image_embed_BE"].shape == (3, 16)
    assert out["patch_tokens_BPE"].shape == (3, 4, 16)  # (16 / 8)^2 patches, CLS left out
    assert out["text_embed_BNE"].shape == (3, 2, 16)
    assert out["logit_scale"].dim() == 0 and out["logit_bias"].item() == -10.0
    prefixes = {key.split(".")[0] for key in model.state_dict()}
    assert prefixes == {"encoder", "flair_pool"}


def test_strip_keeps_the_pooler_beside_the_clip_shaped_encoder(tmp_path):
    torch.manual_seed(0)
    model = FlairModel(TINY, heads=2, logit_bias=-10.0)
    full = model.state_dict()
    assert not any(key.startswith("flair_pool") for key in encoder_state(full))
    assert save_pooler(full, tmp_path, dim=16, heads=2) == count_parameters(model.flair_pool)
    pool = load_pooler(tmp_path)
    queries_QE, patches_BPE = torch.randn(3, 16), torch.randn(2, 4, 16)
    with torch.no_grad():
        torch.testing.assert_close(pool(queries_QE, patches_BPE), model.flair_pool(queries_QE, patches_BPE),
                                   rtol=0, atol=0)
    other = tmp_path / "clip"
    other.mkdir()
    assert save_pooler(encoder_state(full), other, dim=16, heads=2) == 0 and load_pooler(other) is None
