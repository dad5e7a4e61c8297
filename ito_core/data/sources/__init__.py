"""Raw inputs of the prep stage (``data=raw``): one reader per ``data.input_kind``, each a generator of
``RawRecord`` in a fixed order, the order that shard boundaries and duplicate removal depend on.

A record carries its image inline (img2dataset tars) or as a path / s3:// URL that prep fetches,
and its captions raw: bytes wherever the input had bytes, so a non-UTF-8 caption is counted by prep,
never guessed at. A reader drops nothing: a sample it finds broken comes with a ``skip`` reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from ito_core.config import DataConfig
from ito_core.data.sources import folder, img2dataset, table
from ito_core.data.sources.record import RawRecord

__all__ = ["READERS", "RawRecord", "read_records", "record_counts"]

READERS: dict[str, Callable[[DataConfig], Iterator[RawRecord]]] = {
    "img2dataset": img2dataset.records, "table": table.records, "folder": folder.records}


def read_records(data: DataConfig, *, start: int = 0, counts: list[int] | None = None) -> Iterator[RawRecord]:
    """The records of ``data.input`` in their fixed order (``data.input_kind`` picks the reader), from number
    ``start`` on; ``counts`` (``record_counts``) lets the reader skip what precedes it unread."""
    if data.input_kind not in READERS:
        raise ValueError(f"data.input_kind={data.input_kind!r}: choose one of {sorted(READERS)}")
    if counts is not None:
        return img2dataset.records(data, start=start, counts=counts)
    return itertools.islice(READERS[data.input_kind](data), start, None)


def record_counts(data: DataConfig) -> list[int] | None:
    """The records of each part of ``data.input``, where they can be counted without reading the images
    (img2dataset tars, from their headers), else None."""
    return img2dataset.tar_counts(data) if data.input_kind == "img2dataset" else None
