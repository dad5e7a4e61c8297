"""Local-or-S3 files for the data readers: open or read one, list a folder's, tell an image by its name.

A path is local (``~`` expanded) or ``s3://bucket/key``, read with the shard reader's boto3 set-up
(credentials and ``AWS_ENDPOINT_URL_S3`` from the environment).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal, overload

from ito_core.storage import list_s3_objects, open_s3_object

# Lower case, no dot. torchvision ImageFolder's list plus webp; Pillow decodes all of them. The order is
# the preference when a webdataset sample holds several image members (img2dataset writes jpg).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff")
_IMAGE_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)


def is_s3(path: str) -> bool:
    return path.startswith("s3://")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(_IMAGE_SUFFIXES)


@contextmanager
def open_binary(path: str) -> Iterator[BinaryIO]:
    """A buffered binary stream of a local path or s3:// URL (streamed: a large table is never held whole)."""
    if is_s3(path):
        with open_s3_object(path) as stream:
            yield io.BufferedReader(stream)
    else:
        with Path(path).expanduser().open("rb") as f:
            yield f


@overload
def read_bytes(path: str, *, missing_ok: Literal[False] = False) -> bytes: ...
@overload
def read_bytes(path: str, *, missing_ok: bool) -> bytes | None: ...


def read_bytes(path: str, *, missing_ok: bool = False) -> bytes | None:
    """The bytes at a local path or s3:// URL. No such file raises FileNotFoundError, or gives None with
    ``missing_ok`` (as does a folder, or a path through a file there); any other error raises."""
    try:
        with open_binary(path) as stream:
            return stream.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        if missing_ok:
            return None
        raise


def list_files(root: str, *, follow_links: bool) -> Iterator[str]:
    """Paths of the files under the folder ``root``, relative to it; none when there is no such folder.

    Local: walked top-down, names sorted within each folder, holding one folder's names at a time
    (``follow_links``: also walk symlinked folders). S3: every key, sorted (held at once).
    """
    if is_s3(root):
        yield from list_s3_objects(root)
        return
    base = Path(root).expanduser()
    for folder, dirs, files in os.walk(base, followlinks=follow_links):
        dirs.sort()
        relative = Path(folder).relative_to(base)
        for name in sorted(files):
            yield (relative / name).as_posix()
