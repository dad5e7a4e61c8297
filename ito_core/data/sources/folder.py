"""A folder of images with caption sidecars -> raw records.

``data.input``: a local folder or an s3:// prefix. Every image (``.jpg .jpeg .png .webp .bmp``) is a
sample; ``<name>.txt`` beside ``<name>.<ext>`` holds its captions, one per non-empty line (several lines:
ITO's N text variants). An image without a sidecar counts as ``no_caption``; a sidecar without an
image as ``missing_file``. Other files are not samples and are ignored.

Order: local folders are walked top-down with names sorted in each folder; S3 keys come in key order.
A local walk holds one folder's names at a time; an S3 listing holds every key (~100 bytes each).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ito_core.config import DataConfig
from ito_core.data.sources.record import RawRecord, is_image_name, join_url
from ito_core.storage import list_s3_objects

SIDECAR = ".txt"


def records(data: DataConfig) -> Iterator[RawRecord]:
    root = data.input
    if root.startswith("s3://"):
        names: Iterable[str] = list_s3_objects(root)
    elif Path(root).is_dir():
        names = _walk(Path(root))
    else:
        raise ValueError(f"data.input={root!r} is not a folder; point it at the folder of images and .txt captions")
    found = False
    # Sorted names keep "<stem>.*" together, so one pass pairs images with their sidecars.
    for stem, group in itertools.groupby(names, key=lambda name: name.rpartition(".")[0] or name):
        files = list(group)
        sidecar = f"{stem}{SIDECAR}" if f"{stem}{SIDECAR}" in files else ""
        images = [name for name in files if is_image_name(name)]
        for image in images:
            found = True
            yield RawRecord(source=image, image_url=join_url(root, image),
                            caption_url=join_url(root, sidecar) if sidecar else "")
        if sidecar and not images:
            yield RawRecord(source=sidecar, skip="missing_file")
    if not found:
        raise ValueError(f"data.input={root!r} holds no images ({', '.join(('.jpg', '.png', '.webp'))}, ...)")


def _walk(root: Path) -> Iterator[str]:
    """Relative paths of the files under ``root``: top-down, names sorted within each folder."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        relative = Path(folder).relative_to(root)
        for name in sorted(files):
            yield (relative / name).as_posix()
