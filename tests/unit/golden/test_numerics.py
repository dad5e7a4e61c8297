"""Every method's losses and stripped weights equal the frozen ones bitwise (``numerics.py`` says how)."""

from __future__ import annotations

import json

import pytest
from numerics import GOLDEN, METHODS, method_numerics  # tests/unit/golden is on sys.path (rootdir-relative import)


@pytest.mark.parametrize("method", METHODS)
def test_method_numerics_are_unchanged_bitwise(method: str) -> None:
    assert method_numerics(method) == json.loads(GOLDEN.read_text())[method]
