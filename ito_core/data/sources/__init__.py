"""Raw inputs of the prep stage (``data=raw``): one reader per ``data.input_kind``, each a generator of
``RawRecord`` in a fixed order, the order that shard boundaries and duplicate removal depend on.

A record carries its image inline (img2dataset tars) or as a path / s3:// URL that prep fetches,
and its captions raw: bytes wherever the input had bytes, so a non-UTF-8 caption is counted by prep,
never guessed at. A reader drops nothing: a sample it finds broken comes with a ``skip`` reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ito_core.config import DataConfig
from ito_core.data.sources import folder, img2dataset, table
from ito_core.data.sources.record import RawRecord

__all__ = ["READERS", "RawRecord", "read_records"]

READERS: dict[str, Callable[[DataConfig], Iterator[RawRecord]]] = {
    "img2dataset": img2dataset.records, "table": table.records, "folder": folder.records}


def read_records(data: DataConfig) -> Iterator[RawRecord]:
    """The records of ``data.input`` in their fixed order (``data.input_kind`` picks the reader)."""
    if data.input_kind not in READERS:
        raise ValueError(f"data.input_kind={data.input_kind!r}: choose one of {sorted(READERS)}")
    return READERS[data.input_kind](data)
