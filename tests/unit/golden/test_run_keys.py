"""Run keys of the shipped configs equal the frozen ones (``run_keys.py`` says how they were made)."""

from __future__ import annotations

import json

from run_keys import GOLDEN, current_keys  # tests/unit/golden is on sys.path: pytest's rootdir-relative import


def test_shipped_configs_keep_their_run_keys() -> None:
    assert current_keys() == json.loads(GOLDEN.read_text())
