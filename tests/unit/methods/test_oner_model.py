"""OneR's single tower: one parameter set for both modalities, padding masked, joint sequences as documented."""

import pytest
import torch

from ito_core.config import ModelConfig
from ito_core.data.tokenizer import build_tokenizer
from ito_core.methods.oner.model import OneRModel, OneTower, sot_token_id
from ito_core.models.transformer import Transformer

INPUT_EMBEDDINGS = {"conv1.weight", "image_positional_embedding", "token_embedding.weight",
                    "text_positional_embedding"}


def config(layers: int = 2) -> ModelConfig:
    return ModelConfig(name="oner-test", embed_dim=16, image_size=16, patch_size=8, vision_width=32,
                       vision_layers=layers, vision_heads=2, context_length=12)


def batch(seed: int = 0, n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    images_BCHW = torch.randn(n, 3, 16, 16, generator=gen)
    tokens_BL = build_tokenizer(12)(["a red square", "two blue circles on grey", "x"][:n])
    return images_BCHW, tokens_BL


def grads_of(tower: OneTower, loss: torch.Tensor) -> set[str]:
    tower.zero_grad(set_to_none=True)
    loss.backward()
    return {name for name, p in tower.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_one_transformer_shared_by_both_modalities():
    torch.manual_seed(0)
    tower = OneTower(config())
    assert sum(isinstance(m, Transformer) for m in tower.modules()) == 1
    images_BCHW, tokens_BL = batch()
    image_used = grads_of(tower, tower.encode_image(images_BCHW).square().sum())
    text_used = grads_of(tower, tower.encode_text(tokens_BL).square().sum())
    shared = {name for name, _ in tower.named_parameters()} - INPUT_EMBEDDINGS - {"logit_scale"}
    assert shared and any(name.startswith("transformer.resblocks.") for name in shared)
    # Every block / norm / projection parameter gets a gradient from images AND from texts ...
    assert shared <= image_used and shared <= text_used
    # ... and the only modality-specific parameters are the input embeddings.
    assert image_used - shared == {"conv1.weight", "image_positional_embedding", "token_embedding.weight"}
    assert text_used - shared == {"token_embedding.weight", "text_positional_embedding"}
    # Images read the token table only at the shared read-out slot (SOT).
    tower.zero_grad(set_to_none=True)
    tower.encode_image(images_BCHW).sum().backward()
    rows = tower.token_embedding.weight.grad.abs().sum(1).nonzero().flatten().tolist()
    assert rows == [sot_token_id(config())]


def test_sot_slot_is_the_tokenizers_start_token():
    assert sot_token_id(config()) == build_tokenizer(12).sot_token_id


def test_text_padding_is_masked():
    torch.manual_seed(0)
    tower = OneTower(config()).eval()
    _, tokens_BL = batch()
    eot_B = tokens_BL.argmax(1)
    noisy_BL = tokens_BL.clone()
    for b, eot in enumerate(eot_B.tolist()):
        noisy_BL[b, eot + 1:] = torch.randint(1, 40000, (tokens_BL.shape[1] - eot - 1,))
    assert not torch.equal(noisy_BL, tokens_BL)
    torch.testing.assert_close(tower.encode_text(noisy_BL), tower.encode_text(tokens_BL), rtol=0, atol=1e-6)
    # ... while the text itself (bidirectional attention: every token reaches the SOT read-out) does matter.
    changed_BL = tokens_BL.clone()
    changed_BL[:, 1] = 320
    assert not torch.allclose(tower.encode_text(changed_BL), tower.encode_text(tokens_BL))


@pytest.mark.parametrize("cross_only", [False, True])
def test_readout_rows_equal_the_full_sequence(cross_only):
    """encode_joint computes only the two read-out rows in its last block: same as running every token."""
    torch.manual_seed(0)
    tower = OneTower(config()).eval()
    images_BCHW, tokens_BL = batch()
    pruned_B2E = tower.encode_joint(images_BCHW, tokens_BL, cross_only=cross_only)
    img, txt = tower.embed_image(images_BCHW), tower.embed_text(tokens_BL)
    T, L = img.shape[1], txt.shape[1]
    keys = torch.cat([torch.ones(3, T, dtype=torch.bool), tokens_BL.argmax(1)[:, None] >= torch.arange(L)], 1)
    mask = keys[:, None, None, :].expand(-1, 1, T + L, -1)
    if cross_only:
        is_img = torch.arange(T + L) < T
        mask = mask & (is_img[:, None] != is_img[None, :])
    full = tower.ln_final(tower.transformer(torch.cat([img, txt], 1), mask)) @ tower.proj
    torch.testing.assert_close(pruned_B2E, full[:, [0, T]], rtol=0, atol=1e-5)


def test_cross_only_slots_read_the_other_modality():
    """With one block, F(I|T)'s slot attends only to text: the image's patches cannot reach it; F(T|I)'s can."""
    torch.manual_seed(0)
    tower = OneTower(config(layers=1)).eval()
    images_BCHW, tokens_BL = batch()
    other_images = images_BCHW + 1.0
    cross, cross_other = (tower.encode_joint(x, tokens_BL, cross_only=True) for x in (images_BCHW, other_images))
    torch.testing.assert_close(cross[:, 0], cross_other[:, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(cross[:, 1], cross_other[:, 1])
    full, full_other = (tower.encode_joint(x, tokens_BL, cross_only=False) for x in (images_BCHW, other_images))
    assert not torch.allclose(full[:, 0], full_other[:, 0])


@pytest.mark.parametrize(("cic", "cmc"), [(True, True), (False, False)])
def test_model_outputs(cic, cmc):
    torch.manual_seed(0)
    model = OneRModel(config(), cic=cic, cmc=cmc)
    images_BCHW, tokens_BL = batch()
    out = model(images_BCHW[:, None], tokens_BL[:, None])
    expected = {"image_features_BD", "text_features_BD", "logit_scale"}
    if cic:
        expected |= {"cic_image_BD", "cic_text_BD"}
    if cmc:
        expected |= {"joint_BD"}
    assert set(out) == expected
    for key in expected - {"logit_scale"}:
        assert out[key].shape == (3, 16)
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(3))
    assert out["logit_scale"].dim() == 0
    assert {name.split(".")[0] for name, _ in model.named_parameters()} == {"encoder"}


def test_activation_checkpointing_keeps_gradients():
    """The shared blocks run four times per step (image, text, two joint passes); recomputing them in backward
    (train.activation_checkpointing) gives the same gradients."""
    from ito_core.activation_checkpointing import apply_activation_checkpointing
    from ito_core.methods.oner.loss import LOSS_NAMES, OneRObjective

    images_BCHW, tokens_BL = batch()
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = OneRModel(config(), cic=True, cmc=True)
        if checkpointed:
            assert apply_activation_checkpointing(model) == 2
        OneRObjective(weights=dict.fromkeys(LOSS_NAMES, 1.0))(model(images_BCHW[:, None], tokens_BL[:, None]))[
            "loss"].backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=0, atol=1e-6, msg=name)
