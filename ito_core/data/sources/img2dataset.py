"""img2dataset output (webdataset tars of ``<key>.jpg`` + ``<key>.txt`` + ``<key>.json``) -> raw records.

``data.input``: a brace pattern of tar paths or s3:// URLs (``/data/cc3m/{00000..00331}.tar``), or a local
folder (its ``*.tar``, sorted). Tars are streamed in that order, members in tar order. A caption column
is a member extension (``txt``: img2dataset's caption file) or else a key of the sample's ``.json`` (e.g.
a column saved with ``--save_additional_columns``); a list value there gives several captions.

Member names are checked before anything is read: an absolute name, a ``..`` component or a link
means a tampered or foreign tar, and prep stops with an error naming it (webdataset's tar reader
does not check names). A tar that breaks off (truncated, corrupt) counts once as ``broken_tar``
and prep goes on with the next one. The parquet files img2dataset writes beside the tars are not needed.
"""

from __future__ import annotations

import itertools
import json
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from braceexpand import braceexpand

from ito_core.config import DataConfig
from ito_core.data.files import IMAGE_EXTENSIONS, is_s3
from ito_core.data.loader import open_shard
from ito_core.data.sources.record import RawRecord

log = logging.getLogger(__name__)


def records(data: DataConfig) -> Iterator[RawRecord]:
    for url in tar_urls(data.input):
        try:
            with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
                for key, group in itertools.groupby(_members(url, tar), key=lambda member: member[0]):
                    yield _record(f"{url}#{key}", {ext: body for _, ext, body in group}, data.caption_columns)
        except tarfile.TarError as err:  # a truncated or corrupt tar: what it still held is lost, counted once
            log.warning("prep: %s is broken after its last good sample (%s); skipping the rest of it", url, err)
            yield RawRecord(source=url, skip="broken_tar")


def tar_urls(pattern: str) -> list[str]:
    if not is_s3(pattern) and Path(pattern).is_dir():
        urls = sorted(str(path) for path in Path(pattern).glob("*.tar"))
    else:
        urls = list(braceexpand(pattern))
    if not urls:
        raise ValueError(f"data.input={pattern!r}: no .tar files there; point it at img2dataset's output folder "
                         "or give a brace pattern like /data/cc3m/{00000..00331}.tar")
    return urls


def _members(url: str, tar: tarfile.TarFile) -> Iterator[tuple[str, str, bytes]]:
    """(sample key, extension, bytes) of the tar's files, in order; webdataset's key rule (up to the
    first "." of the file name)."""
    for member in tar:
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts or member.issym() or member.islnk():
            raise ValueError(
                f"{url}: refusing tar member {member.name!r} (absolute path, '..' or link): img2dataset never writes "
                "one, so the tar was altered; re-create it, or drop it from data.input")
        if not member.isfile():
            continue  # folders
        stem, dot, ext = path.name.partition(".")
        extracted = tar.extractfile(member)
        assert extracted is not None  # a regular file
        yield str(path.parent / stem) if path.parent.name else stem, ext.lower() if dot else "", extracted.read()


def _record(source: str, files: dict[str, bytes], caption_columns: list[str]) -> RawRecord:
    image_ext = next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)
    if image_ext is None:
        return RawRecord(source=source, skip="missing_file")
    captions: list[str | bytes] = []
    for column in caption_columns:
        if column in files:
            captions.append(files[column])
            continue
        try:
            value = json.loads(files.get("json", b"{}")).get(column)
        except UnicodeDecodeError:
            return RawRecord(source=source, skip="bad_caption_encoding")
        except (json.JSONDecodeError, AttributeError):  # not JSON, or not an object
            return RawRecord(source=source, skip="bad_metadata")
        captions.extend(value if isinstance(value, list) else [value])
    return RawRecord(source=source, captions=captions, image=files[image_ext])
