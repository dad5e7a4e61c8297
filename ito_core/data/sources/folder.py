"""A folder of images with caption sidecars -> raw records.

``data.input``: a local folder or an s3:// prefix. Every image (``.jpg .png .webp .tif``, ...: see
``files.IMAGE_EXTENSIONS``) is a sample; ``<name>.txt`` beside ``<name>.<ext>`` holds its captions, one
per non-empty line (several lines: ITO's N text variants). An image without a sidecar counts as
``no_caption``; a sidecar without an image as ``missing_file``. Other files are not samples and are ignored.

Order: local folders are walked top-down with names sorted in each folder (symlinked folders are not
walked); S3 keys come in key order. A local walk holds one folder's names at a time; an S3 listing holds
every key (~100 bytes each).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

from ito_core.config import DataConfig
from ito_core.data.files import is_image_name, is_s3, list_files
from ito_core.data.sources.record import RawRecord, join_url

SIDECAR = ".txt"


def records(data: DataConfig) -> Iterator[RawRecord]:
    root = data.input
    if not is_s3(root) and not Path(root).expanduser().is_dir():
        raise ValueError(f"data.input={root!r} is not a folder; point it at the folder of images and .txt captions")
    # Unlike eval sets (torchvision parity), no symlinked folders: a link up the tree would walk in circles.
    names = list_files(root, follow_links=False)
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
