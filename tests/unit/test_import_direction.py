"""Imports point one way: flows -> cluster -> ito_core. ito_core never imports prefect or submitit,
cluster never imports prefect (checked in a fresh interpreter with those packages blocked)."""

from __future__ import annotations

import subprocess
import sys

import pytest

BLOCK_AND_IMPORT = """
import importlib, pkgutil, sys
BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} imported from {package}")

sys.meta_path.insert(0, Blocker())
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(package.__path__, prefix={package!r} + "."):
    importlib.import_module(info.name)
print("ok")
"""


@pytest.mark.parametrize(("package", "blocked"), [("ito_core", ("prefect", "submitit")), ("cluster", ("prefect",))])
def test_package_does_not_import_upstream_layers(package: str, blocked: tuple[str, ...]) -> None:
    code = BLOCK_AND_IMPORT.format(package=package, blocked=blocked)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
