"""method=slip: config, validation, the training model's outputs, and strip dropping the SimCLR head."""

import pytest
import torch

from ito_core.config import config_warnings, load_config
from ito_core.data.augment import MultiViewAugment
from ito_core.methods import build_augment, build_model, build_objective
from ito_core.methods.slip.model import SlipHead, SlipModel, SlipObjective, SlipViews
from ito_core.model_folder import model_card
from ito_core.models.dual_encoder import DualEncoder
from ito_core.strip import encoder_state

TINY = ["model=tiny", "model.vision_layers=1", "model.text_layers=1", "method=slip", "method.slip_hidden=32",
        "method.slip_dim=16"]


def test_method_slip_sets_three_views_clip_loss_no_fusion_and_slips_defaults():
    cfg = load_config(["model=tiny", "method=slip"])
    assert (cfg.method.name, cfg.ito.images, cfg.ito.texts, cfg.ito.fusion, cfg.loss.name) == ("slip", 3, 1, "none",
                                                                                                "clip")
    m, schema = cfg.method, type(cfg.method)()
    assert (m.slip_hidden, m.slip_dim, m.slip_temperature, m.slip_weight) == (4096, 256, 0.1, 1.0)
    assert (schema.slip_hidden, schema.slip_dim, schema.slip_temperature, schema.slip_weight) == (4096, 256, 0.1, 1.0)


@pytest.mark.parametrize(("override", "key"), [
    ("ito.images=2", "ito.images"),
    ("ito=ito", "ito.fusion"),
    ("loss=siglip", "loss.name"),
    ("method.slip_hidden=0", "method.slip_hidden"),
    ("method.slip_temperature=0", "method.slip_temperature"),
    ("method.slip_weight=0", "method.slip_weight"),
])
def test_bad_slip_settings_name_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config([*TINY, override])


def test_registries_build_slips_model_objective_and_views():
    cfg = load_config(TINY)
    model = build_model(cfg)
    assert isinstance(model, SlipModel) and model.fusion is None
    assert isinstance(build_objective(cfg, model, rank=0, world_size=1), SlipObjective)
    assert isinstance(build_augment(cfg), SlipViews)
    assert type(build_augment(load_config(["model=tiny", "method=clip"]))) is MultiViewAugment


def test_forward_outputs_are_batch_first_and_train_end_to_end():
    cfg = load_config(TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    images = build_augment(cfg)(torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8))
    tokens = torch.randint(1, 100, (4, 1, cfg.model.context_length))
    out = model(images, tokens)
    assert out["image_features_BMD"].shape == (4, 1, cfg.model.embed_dim)
    assert out["text_features_BND"].shape == (4, 1, cfg.model.embed_dim)
    assert out["ssl_features_BVS"].shape == (4, 2, 16) and out["logit_scale"].dim() == 0
    torch.testing.assert_close(out["ssl_features_BVS"].norm(dim=-1), torch.ones(4, 2))
    losses = build_objective(cfg, model, rank=0, world_size=1)(out)
    losses["loss"].backward()
    # The SSL term reaches the image tower and the head; the text tower only through the CLIP term.
    assert model.ssl_head[0].weight.grad.abs().sum() > 0
    assert model.encoder.visual.conv1.weight.grad.abs().sum() > 0


def test_ssl_views_do_not_change_the_clip_outputs():
    """Views 1-2 only feed the head: the CLIP features of view 0 are those of the plain dual encoder."""
    cfg = load_config(TINY)
    model = build_model(cfg).eval()
    images, tokens = torch.randn(2, 3, 3, 32, 32), torch.randint(1, 100, (2, 1, cfg.model.context_length))
    out = model(images, tokens)
    torch.testing.assert_close(out["image_features_BMD"][:, 0], model.encoder.encode_image(images[:, 0], True))
    other = model(torch.cat([images[:, :1], torch.randn(2, 2, 3, 32, 32)], dim=1), tokens)
    torch.testing.assert_close(other["image_features_BMD"], out["image_features_BMD"])
    assert not torch.allclose(other["ssl_features_BVS"], out["ssl_features_BVS"])


def test_strip_drops_the_head_and_keeps_a_plain_dual_encoder():
    cfg = load_config(TINY)
    model = build_model(cfg)
    full = model.state_dict()
    state = encoder_state(full)
    assert not any(k.startswith("ssl_head") for k in state)
    dropped = {k for k in full if not k.startswith("encoder.")}
    assert dropped and all(k.startswith("ssl_head.") for k in dropped)
    assert sum(full[k].numel() for k in dropped) == sum(p.numel() for p in SlipHead(64, 32, 16).parameters())
    DualEncoder(cfg.model).load_state_dict(state)  # strict: exactly a CLIP dual encoder's weights


def test_accumulation_warns_that_batch_norm_sees_micro_batches():
    assert not [w for w in config_warnings(load_config(TINY)) if "method=slip" in w]
    warnings = config_warnings(load_config([*TINY, "train.batch_size=16", "train.micro_batch_size=4"]))
    assert any("method=slip" in w and "train.micro_batch_size=0" in w for w in warnings)


def test_model_card_names_the_method_and_the_dropped_head():
    manifest = {"num_parameters": 1, "dropped_parameters": 2, "steps": 3, "final_loss": 4.0, "data_key": "d",
                "data_manifest_sha256": "h", "source_checkpoint": "c"}
    card = model_card(load_config(TINY), manifest)
    assert card.startswith("# SLIP dual encoder") and "`method=slip`" in card and "SLIP's SSL head" in card
