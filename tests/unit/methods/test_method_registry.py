"""The method registry: each method's options are its own dataclass, written as the flat ``method.<option>`` keys
users know, with its defaults in configs/method/<name>.yaml; other methods' options pass through a sweep over
methods untouched; mistakes name the key and the fix."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import yaml

from ito_core.config import CONFIG_DIR, MethodConfig, as_dict, load_config
from ito_core.methods import registry
from ito_core.methods.spec import MethodSpec

BASE = ["model=tiny"]


@pytest.mark.parametrize("spec", registry.specs(), ids=lambda spec: spec.name)
def test_each_methods_yaml_holds_its_options_at_the_dataclass_defaults(spec: MethodSpec) -> None:
    section = yaml.safe_load((CONFIG_DIR / "method" / f"{spec.name}.yaml").read_text())["method"]
    defaults = (spec.config or MethodConfig)()
    assert section == {"name": spec.name, **{key: getattr(defaults, key) for key in registry.option_names(spec)}}


def test_a_sweep_over_methods_keeps_the_other_methods_options_aside() -> None:
    cfg = load_config(["experiment=method_comparison", "comparison=flair"])
    assert (cfg.method.flair_heads, cfg.method.others) == (8, {"slip_hidden": 512, "slip_dim": 64})
    assert as_dict(cfg)["method"] == {"name": "flair", "flair_heads": 8, "slip_hidden": 512, "slip_dim": 64}
    assert not hasattr(load_config(["experiment=method_comparison", "comparison=clip"]).method, "slip_hidden")


@pytest.mark.parametrize(("override", "message"), [
    ("+method.flair_head=4", "config method.flair_head: no method has this option; did you mean method.flair_heads?"),
    ("+method.widht=4", "config method.widht: no method has this option; the options of method=flair"),
    ("method.flair_heads=many", "config method.flair_heads: Value 'many'"),
    ("+method.slip_dim=wide", "config method.slip_dim: Value 'wide'"),
])
def test_bad_method_options_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        load_config([*BASE, "method=flair", override])


def test_two_methods_cannot_share_an_option_key() -> None:
    @dataclass
    class Clash(MethodConfig):
        name: str = "clash"
        flair_heads: int = 2

    with pytest.raises(ValueError, match=r"option\(s\) \['flair_heads'\] belong to another method"):
        registry.register(MethodSpec(name="clash", builders="unused", config=Clash))
    assert "clash" not in registry.names()


def test_a_model_folders_unknown_architecture_names_the_ones_this_version_loads() -> None:
    with pytest.raises(ValueError, match=r"architecture='three_tower': this version of ito_core loads \[.*'one_tower'"):
        registry.architecture("three_tower")


def test_a_new_method_enters_the_run_key_with_its_own_options_only() -> None:
    @dataclass
    class Tiny(MethodConfig):
        name: str = "tiny_method"
        tiny_method_weight: float = 0.5

    spec = registry.register(MethodSpec(name="tiny_method", builders="unused", config=Tiny))
    try:
        method = registry.method_config({"name": "tiny_method", "tiny_method_weight": 2, "slip_dim": 64})
        assert registry.method_identity(method) == {"name": "tiny_method", "tiny_method_weight": 2.0}
    finally:
        registry._SPECS.pop(spec.name)
