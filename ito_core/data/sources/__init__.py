"""Raw inputs of the prep stage (``data=raw``): one reader per ``data.input_kind``, each a generator of
``RawRecord`` in a fixed order, the order that shard boundaries and duplicate removal depend on.

A record carries its image inline (img2dataset tars) or as a path / s3:// URL that prep fetches,
and its captions raw: bytes wherever the input had bytes, so a non-UTF-8 caption is counted by prep,
never guessed at. A reader drops nothing: a sample it finds broken comes with a ``skip`` reason.

Each kind is one module here plus its entry in ``ito_core.config.registry.RAW_INPUT_KINDS``, the table validation
reads the names from and ``input_reader`` resolves.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from types import ModuleType

from ito_core.config import DataConfig
from ito_core.config.registry import RAW_INPUT_KINDS, resolve
from ito_core.data.sources.record import RawRecord

__all__ = ["RawRecord", "input_reader", "read_records", "record_counts"]


def input_reader(data: DataConfig) -> ModuleType:
    """The module that reads ``data.input_kind``."""
    if data.input_kind not in RAW_INPUT_KINDS:
        raise ValueError(f"data.input_kind={data.input_kind!r}: choose one of {sorted(RAW_INPUT_KINDS)}")
    return resolve(RAW_INPUT_KINDS, data.input_kind)


def read_records(data: DataConfig, *, start: int = 0, counts: list[int] | None = None) -> Iterator[RawRecord]:
    """The records of ``data.input`` in their fixed order (``data.input_kind`` picks the reader), from number
    ``start`` on; ``counts`` (``record_counts``) lets the reader skip what precedes it unread."""
    reader = input_reader(data)
    if counts is not None:  # only a kind with record_counts hands them out
        return reader.records(data, start=start, counts=counts)
    return itertools.islice(reader.records(data), start, None)


def record_counts(data: DataConfig) -> list[int] | None:
    """The records of each part of ``data.input``, where its kind can count them without reading the images
    (img2dataset tars, from their headers), else None."""
    count = getattr(input_reader(data), "record_counts", None)
    return count(data) if count is not None else None
