"""Stage commands (``ito-sweep prep`` ...) log outside any flow run: the lines print, with no Prefect warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# setup_logging is what a stage's first Prefect task does: it attaches the API handler to ito_core's loggers.
PROBE = ("import flows.cli, logging; from prefect.logging.configuration import setup_logging; setup_logging(); "
         "logging.getLogger('ito_core.probe').warning('probe line')")
PREFECT_WARNING = "without a flow run id"


def _stderr(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"} | env
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=120, check=True).stderr


def test_ito_core_lines_outside_a_flow_run_print_without_a_prefect_warning() -> None:
    stderr = _stderr()
    assert "probe line" in stderr and PREFECT_WARNING not in stderr


def test_a_users_own_setting_wins() -> None:
    assert PREFECT_WARNING in _stderr(PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="warn")
