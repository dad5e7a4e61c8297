"""The flow process (the ``ito-sweep`` CLI and the modules its flow imports) does not load scikit-learn,
matplotlib or UMAP at start: they cost ~1.5 s CPU per start and are needed only when evaluating or plotting,
so the eval modules import them inside the functions that use them (checked in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("sklearn", "matplotlib", "umap")


@pytest.mark.parametrize("module", ["flows.cli", "flows.sweep"])
def test_flow_start_does_not_import_eval_only_packages(module: str) -> None:
    code = f"import {module}, sys; print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"import {module} loaded {result.stdout.strip()}"
