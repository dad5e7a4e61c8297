"""No source file of ito_core, cluster or flows is over 400 lines (STYLE.md's budget; issue 24): a file that grows
past it is split by job, never let through."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 400


def test_no_source_file_is_over_the_line_budget() -> None:
    sizes = {path.relative_to(ROOT).as_posix(): len(path.read_text().splitlines())
             for package in ("ito_core", "cluster", "flows") for path in (ROOT / package).rglob("*.py")}
    assert len(sizes) > 50, "the scan sees the sources"
    over = {path: lines for path, lines in sorted(sizes.items()) if lines > MAX_LINES}
    assert not over, f"split these by job (at most {MAX_LINES} lines each): {over}"
