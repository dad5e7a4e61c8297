"""docs/RELIABILITY.md names a test for every guarantee: each one it names exists (a renamed or deleted
test must update the page)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _referenced_tests() -> list[tuple[str, str]]:
    """(file under tests/, test name) for each `file::test` and each `::test` (same file as the one before)."""
    refs, current = [], ""
    for path, name in re.findall(r"`((?:unit|integration|e2e|multinode)/[\w/]+\.py)?::(\w+)`",
                                 (ROOT / "docs" / "RELIABILITY.md").read_text()):
        current = path or current
        refs.append((current, name))
    return refs


def test_every_test_the_page_names_exists() -> None:
    refs = _referenced_tests()
    assert len(refs) > 60
    missing = [f"{path}::{name}" for path, name in refs
               if not re.search(rf"^(    )?def {name}\(", (ROOT / "tests" / path).read_text(), flags=re.M)]
    assert not missing, f"docs/RELIABILITY.md names tests that do not exist: {missing}"
