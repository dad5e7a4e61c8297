"""The eval records of a tiny trained FLAIR and CLIP model equal the golden ones, bitwise (golden/eval_numerics.py:
prep, 3 training steps and the eval stage of two models, about 7 s)."""

from __future__ import annotations

import json

import pytest
from eval_numerics import GOLDEN, current


@pytest.mark.slow
def test_eval_records_equal_the_golden_ones() -> None:
    assert current() == json.loads(GOLDEN.read_text())
