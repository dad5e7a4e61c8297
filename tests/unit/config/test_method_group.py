"""The `method` config group: each file picks the ito/loss settings of one compared system."""

from __future__ import annotations

import importlib

import pytest

from ito_core.config import CONFIG_DIR, config_warnings, load_config
from ito_core.methods import registry

BASE = ["model=tiny"]


def test_the_default_method_is_ito_as_released():
    cfg = load_config(BASE)
    assert cfg.method.name == "ito"
    assert (cfg.ito.images, cfg.ito.fusion, cfg.ito.fusion_weight, cfg.loss.name) == (2, "transformer", 2.0, "clip")
    assert (cfg.ito.fusion_scale, cfg.ito.fusion_positives, cfg.ito.fusion_image_tokens) == ("live", "view_mean", "all")


@pytest.mark.parametrize(("method", "loss"), [("clip", "clip"), ("siglip", "siglip")])
def test_the_clip_family_trains_one_view_one_caption_without_fusion(method, loss):
    cfg = load_config([*BASE, f"method={method}"])
    assert (cfg.method.name, cfg.ito.images, cfg.ito.texts, cfg.ito.fusion, cfg.loss.name) == (method, 1, 1, "none",
                                                                                               loss)


def test_command_line_groups_and_ablation_arms_still_apply_on_top():
    assert load_config([*BASE, "method=clip", "ito=ito"]).ito.fusion == "transformer"
    assert load_config([*BASE, "method=siglip", "ablation=ito_lambda05"]).ito.fusion_weight == 0.5


def test_every_method_has_a_config_file_and_builders():
    assert set(registry.names()) == {path.stem for path in (CONFIG_DIR / "method").glob("*.yaml")}
    for spec in registry.specs():
        assert load_config([*BASE, f"method={spec.name}"]).method.name == spec.name
        builders = importlib.import_module(spec.builders)
        assert callable(builders.build_model) and callable(builders.build_objective), spec.builders


def test_an_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="method"):
        load_config([*BASE, "method=blip"])


@pytest.mark.parametrize("method", ["slip", "flair", "oner"])
def test_plan_and_mfu_say_what_the_flop_count_leaves_out(method):
    warnings = config_warnings(load_config([*BASE, f"method={method}"]))
    assert any(f"method.name={method}" in w and "covers the towers only" in w for w in warnings), warnings
    assert not [w for w in config_warnings(load_config([*BASE, "method=ito"])) if "towers only" in w]
