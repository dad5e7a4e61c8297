"""method=flair: its config file, the settings its spec refuses (with the key and the fix), and the registries."""

import pytest
import torch

from ito_core.config import load_config
from ito_core.methods import build_model, build_objective
from ito_core.methods.flair.model import FlairModel

BASE = ["model=tiny", "method=flair"]


def test_flair_yaml_sets_one_view_k_sub_captions_no_fusion_and_the_sigmoid_bias():
    cfg = load_config(BASE)
    assert (cfg.method.name, cfg.method.flair_heads) == ("flair", 8)
    assert (cfg.ito.images, cfg.ito.texts, cfg.ito.fusion, cfg.loss.name) == (1, 3, "none", "siglip")


@pytest.mark.parametrize(("override", "key"), [
    ("ito.images=2", "ito.images"),
    ("ito.texts=1", "ito.texts"),
    ("loss=clip", "loss.name"),
    ("method.flair_heads=5", "method.flair_heads"),
    ("train.micro_batch_size=8", "train.micro_batch_size"),
])
def test_settings_flair_cannot_train_with_name_the_key(override, key):
    with pytest.raises(ValueError, match=f"config {key}: .*; "):
        load_config([*BASE, "train.batch_size=32", override])


def test_micro_batch_equal_to_the_rank_batch_is_no_accumulation_and_allowed():
    assert load_config([*BASE, "train.batch_size=32", "train.micro_batch_size=32"]).train.micro_batch_size == 32


def test_the_registries_build_the_flair_model_and_a_parameterless_objective():
    cfg = load_config(BASE)
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, FlairModel) and model.encoder.bias().item() == cfg.loss.siglip_init_bias
    objective = build_objective(cfg, model, rank=0, world_size=1)
    assert list(objective.parameters()) == []
    images = torch.randn(4, 1, 3, cfg.model.image_size, cfg.model.image_size)
    tokens = torch.randint(1, 100, (4, cfg.ito.texts, 8))
    losses = objective(model(images, tokens))
    losses["loss"].backward()
    assert set(losses) == {"loss", "tcs_loss", "mps_loss", "logit_scale"}
    assert all(p.grad is not None for p in model.flair_pool.parameters())


def test_the_specs_eval_tasks_are_those_the_text_conditioned_path_scores():
    """expected_metrics reads the spec (torch-free); the path itself scores eval.names.TC_TASKS."""
    from ito_core.eval.names import TC_TASKS
    from ito_core.methods import registry

    assert registry.get("flair").own_eval.tasks == TC_TASKS
