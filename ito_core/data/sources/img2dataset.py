"""img2dataset output (webdataset tars of ``<key>.jpg`` + ``<key>.txt`` + ``<key>.json``) -> raw records.

``data.input``: a brace pattern of tar paths or s3:// URLs (``/data/cc3m/{00000..00331}.tar``), or a local
folder (its ``*.tar``, sorted). Tars are streamed in that order, members in tar order. A caption column
is a member extension (``txt``: img2dataset's caption file) or else a key of the sample's ``.json`` (e.g.
a column saved with ``--save_additional_columns``); a list value there gives several captions.

Member names are checked before anything is read: an absolute name, a ``..`` component or a link
means a tampered or foreign tar, and prep stops with an error naming it (webdataset's tar reader
does not check names). A tar that breaks off (truncated, corrupt) counts once as ``broken_tar``
and prep goes on with the next one. The parquet files img2dataset writes beside the tars are not needed.

``record_counts`` gives each tar's record count from its member headers alone (a seek from header to header,
~512 bytes read per member), so a prep array task can start at its first record and skip the tars before
it (``records(data, start=...)``). Only plain local tars can be walked so; a tar that breaks off is counted
by reading it as prep does, so the counts always equal what ``records`` yields.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from braceexpand import braceexpand

from ito_core.config import DataConfig
from ito_core.data.files import IMAGE_EXTENSIONS, is_s3
from ito_core.data.loader import open_shard
from ito_core.data.sources.record import RawRecord

log = logging.getLogger(__name__)


def records(data: DataConfig, *, start: int = 0, counts: list[int] | None = None) -> Iterator[RawRecord]:
    """The records from number ``start`` on; ``counts`` (``record_counts``) lets the tars before it go unread."""
    assert not start or counts is not None, "a start needs the tars' record counts"
    for i, url in enumerate(tar_urls(data.input)):
        if counts is not None and start >= counts[i]:
            start -= counts[i]
            continue
        yield from itertools.islice(_tar_records(url, data.caption_columns), start, None)
        start = 0


def _tar_records(url: str, caption_columns: list[str]) -> Iterator[RawRecord]:
    try:
        with open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for key, group in itertools.groupby(_file_members(url, tar), key=lambda member: member[0]):
                yield _record(f"{url}#{key}", {ext: _body(tar, member) for _, ext, member in group}, caption_columns)
    except tarfile.TarError as err:  # a truncated or corrupt tar: what it still held is lost, counted once
        log.warning("prep: %s is broken after its last good sample (%s); skipping the rest of it", url, err)
        yield RawRecord(source=url, skip="broken_tar")


def record_counts(data: DataConfig) -> list[int] | None:
    """How many records ``records`` yields from each tar, or None when a tar cannot be walked header by header
    (on S3, behind a pipe:, compressed or not a tar): only reading all of it would tell."""
    counts = []
    for url in tar_urls(data.input):
        count = _header_count(url)
        if count is None:
            return None
        counts.append(count)
    return counts


def _header_count(url: str) -> int | None:
    path = Path(url).expanduser()
    if is_s3(url) or not path.is_file():
        return None
    with open_unbuffered(path) as raw:  # unbuffered: a buffer would read ahead into the members' data
        try:
            tar = tarfile.open(fileobj=raw, mode="r:")  # noqa: SIM115 - closed below; failing here means no walk
        except tarfile.TarError:  # compressed, or no tar at all
            return None
        with tar:
            try:
                return sum(1 for _ in itertools.groupby(_file_members(url, tar), key=lambda member: member[0]))
            except tarfile.TarError:  # truncated or corrupt past its start (tarfile checks each member's data
                pass  # is there before it reads the next header): count it the way prep reads it
    log.warning("prep: %s is broken; reading all of it to count its records", url)
    return sum(1 for _ in _tar_records(url, []))


def open_unbuffered(path: Path) -> Any:
    raw = open(path, "rb", buffering=0)  # noqa: SIM115 - the caller closes it
    os.posix_fadvise(raw.fileno(), 0, 0, os.POSIX_FADV_RANDOM)  # nor read ahead in the kernel
    return raw


def tar_urls(pattern: str) -> list[str]:
    if not is_s3(pattern) and Path(pattern).is_dir():
        urls = sorted(str(path) for path in Path(pattern).glob("*.tar"))
    else:
        urls = list(braceexpand(pattern))
    if not urls:
        raise ValueError(f"data.input={pattern!r}: no .tar files there; point it at img2dataset's output folder "
                         "or give a brace pattern like /data/cc3m/{00000..00331}.tar")
    return urls


def _file_members(url: str, tar: tarfile.TarFile) -> Iterator[tuple[str, str, tarfile.TarInfo]]:
    """(sample key, extension, member) of the tar's files, in order; webdataset's key rule (up to the
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
        yield str(path.parent / stem) if path.parent.name else stem, ext.lower() if dot else "", member


def _body(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    extracted = tar.extractfile(member)
    assert extracted is not None  # a regular file
    return extracted.read()


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
