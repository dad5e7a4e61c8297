"""Config errors as a user reads them: the key, the closest valid one or the group's options; no OmegaConf
internals, no Hydra search path."""

from __future__ import annotations

import pytest

from ito_core.config import load_config

INTERNALS = ("full_key", "reference_type", "object_type", "provider=", "search path")


@pytest.mark.parametrize(("override", "message"), [
    ("ito.imagez=2", "config ito.imagez: no such key; did you mean ito.images?"),
    ("+ito.imagez=2", "config ito.imagez: no such key; did you mean ito.images?"),
    ("itoo.images=2", "config itoo.images: no such key; did you mean ito.images?"),
    ("train.lr_rate=1", "config train.lr_rate: no such key; did you mean train.lr?"),
    ("ito.zzz=1", "config ito.zzz: no such key; valid keys of ito: images, texts, fusion"),
    ("model=vit_b_99", "config model=vit_b_99: no such option; choose one of tiny, vit_b_16, vit_b_32, vit_l_14, "
                       "vit_s_32 (configs/model/*.yaml)"),
    ("experiment=dmeo", "config experiment=dmeo: no such option; choose one of demo, embedded_study, ito_ablation"),
    ("ito.images=abc", "config ito.images: Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_a_bad_override_names_the_key_and_the_fix_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        load_config([override])
    text = str(raised.value)
    assert message in text and "\n" not in text and not any(word in text for word in INTERNALS)
