"""What a raw-input reader yields, and where its paths point."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ito_core.data.files import is_s3


@dataclass
class RawRecord:
    source: str  # where the sample came from ("<tar>#<key>", "<table>:<row>", a path): kept in its json
    captions: list[str | bytes] = field(default_factory=list)
    image: bytes | None = None  # inline bytes, or
    image_url: str = ""  # a local path / s3:// URL to fetch them from
    caption_url: str = ""  # a sidecar file whose non-empty lines are more captions
    skip: str = ""  # a skip reason the reader found (e.g. "missing_file")


def join_url(base: str, name: str) -> str:
    """``name`` under the folder ``base`` (local or s3://), unless ``name`` is absolute or a URL itself."""
    if name.startswith(("s3://", "/")):
        return name
    return f"{base.rstrip('/')}/{name}" if is_s3(base) else str(Path(base, name))
