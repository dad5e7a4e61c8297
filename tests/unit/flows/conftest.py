"""Fixtures for the tests that call ``flows.cli.main`` in the test process."""

from __future__ import annotations

import os

import pytest

from flows import cli


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main sets Prefect defaults in os.environ; keep them out of the rest of the session's tests."""
    for name in cli.PREFECT_DEFAULTS:
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
