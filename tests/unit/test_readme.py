"""The README's test command is the one CI runs, and the demo command runs the demo experiment."""

from __future__ import annotations

import re
from pathlib import Path

from ito_core.data.openclipart import OPENCLIPART_PACKAGE
from ito_core.data.tuxpaint import TUXPAINT_PACKAGE

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks if "apt-get install" in block]


def test_readme_has_exactly_two_setup_commands() -> None:
    demo, tests = _readme_commands()
    assert demo.endswith("ito-sweep run experiment=demo") and "torch==2.13.0" in demo
    assert tests.endswith("pytest") and "torch==2.13.0" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = _readme_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_both_setup_commands_install_the_embedded_data_packages() -> None:
    for command in _readme_commands():
        assert all(f" {package} " in command for package in ("dataset-fashion-mnist", OPENCLIPART_PACKAGE,
                                                              TUXPAINT_PACKAGE))
