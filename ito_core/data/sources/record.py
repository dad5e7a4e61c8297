"""What a raw-input reader yields, and the helpers readers share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ito_core.storage import open_s3_object

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")  # lower case, no dot


@dataclass
class RawRecord:
    source: str  # where the sample came from ("<tar>#<key>", "<table>:<row>", a path): kept in its json
    captions: list[str | bytes] = field(default_factory=list)
    image: bytes | None = None  # inline bytes, or
    image_url: str = ""  # a local path / s3:// URL to fetch them from
    caption_url: str = ""  # a sidecar file whose non-empty lines are more captions
    skip: str = ""  # a skip reason the reader found (e.g. "missing_file")


def read_bytes(url: str) -> bytes | None:
    """The bytes at a local path or s3:// URL; None when there is no such file (other errors raise)."""
    try:
        if url.startswith("s3://"):
            with open_s3_object(url) as stream:
                return stream.read()
        return Path(url).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def join_url(base: str, name: str) -> str:
    """``name`` under the folder ``base`` (local or s3://), unless ``name`` is absolute or a URL itself."""
    if name.startswith(("s3://", "/")):
        return name
    return f"{base.rstrip('/')}/{name}" if base.startswith("s3://") else str(Path(base, name))


def is_image_name(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS
