"""ito.patch_dropout and ito.second_view_size (ito_core/config/views.py): bad values and combinations are refused
when the config loads, each naming the key and the fix; good ones give the views the model and flops.py run."""

from __future__ import annotations

import pytest

from ito_core.config import ItoConfig, ModelConfig, load_config
from ito_core.config.views import kept_patches, view_sizes

CLS = "ito.fusion_image_tokens=cls"


@pytest.mark.parametrize(("overrides", "key", "fix"), [
    (["ito.patch_dropout=1.0"], "ito.patch_dropout", "e.g. 0.5 (FLIP), or 0 for none"),
    (["ito.patch_dropout=-0.1"], "ito.patch_dropout", "e.g. 0.5 (FLIP), or 0 for none"),
    (["ito.second_view_size=12"], "ito.second_view_size", "use e.g. 16, or 0 for full size"),  # tiny: 8 px patches
    (["ito.second_view_size=64"], "ito.second_view_size", "use e.g. 16, or 0 for full size"),  # above 32 px
    (["ito=clip", "ito.second_view_size=16"], "ito.second_view_size", "set ito.images>=2"),
    (["ito.patch_dropout=0.5"], "ito.patch_dropout", "set ito.fusion_image_tokens=cls"),  # fusion reads the grid
    (["ito.second_view_size=16", "ito.fusion_image_tokens=pool4"], "ito.second_view_size",
     "set ito.fusion_image_tokens=cls"),
    (["method=slip", "ito.patch_dropout=0.5"], "ito.patch_dropout", "set ito.patch_dropout=0.0"),
    (["method=flair", "ito.second_view_size=16"], "ito.second_view_size", "set ito.second_view_size=0"),
])
def test_bad_view_options_name_the_key_and_the_fix(overrides: list[str], key: str, fix: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(["model=tiny", *overrides])
    message = str(err.value)
    assert message.startswith(f"config {key}") and fix in message and "\n" not in message


@pytest.mark.parametrize("overrides", [
    ["ito=clip", "ito.patch_dropout=0.5"],
    ["ito.fusion=none", "ito.fusion_weight=0", "ito.second_view_size=16"],
    [CLS, "ito.patch_dropout=0.5", "ito.second_view_size=24"],
    ["ito.second_view_size=32"],  # model.image_size: no second-view option in effect, nothing to refuse
])
def test_good_view_options_load(overrides: list[str]) -> None:
    load_config(["model=tiny", *overrides])


def test_views_and_kept_patches() -> None:
    model = ModelConfig(name="b16", image_size=224, patch_size=16)
    assert view_sizes(model, ItoConfig(images=3)) == [224, 224, 224]
    assert view_sizes(model, ItoConfig(images=3, second_view_size=112)) == [224, 112, 112]
    assert [kept_patches(196, p) for p in (0.0, 0.5, 0.75, 0.999)] == [196, 98, 49, 1]
