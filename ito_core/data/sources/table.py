"""A table of image paths or URLs with caption columns -> raw records, one per row in file order.

``data.input``: a ``.csv``, ``.tsv`` (header row required) or ``.parquet`` file, local or s3://.
``data.image_column`` holds local paths (relative ones are under the table's folder) or s3:// URLs;
every ``data.caption_columns`` column adds a caption (a parquet list column adds each item).
CSV/TSV are read as UTF-8 with undecodable bytes kept as bytes, so prep counts such a caption as
``bad_caption_encoding`` instead of failing on the whole file. Rows stream: memory does not grow
with the table (a parquet file on S3 is first copied to a local temporary file: it needs seeking).
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ito_core.config import DataConfig
from ito_core.data.files import is_s3, open_binary
from ito_core.data.sources.record import RawRecord, join_url

FORMATS = (".csv", ".tsv", ".parquet")
_BATCH_ROWS = 4096  # parquet rows decoded at a time


def records(data: DataConfig) -> Iterator[RawRecord]:
    suffix = Path(data.input.split("?")[0]).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"data.input={data.input!r}: a table must be one of {list(FORMATS)} (by its name)")
    base = data.input.rsplit("/", 1)[0] if is_s3(data.input) else str(Path(data.input).parent)
    columns = [data.image_column, *data.caption_columns]
    rows = _parquet_rows(data.input, columns) if suffix == ".parquet" else _csv_rows(data.input, columns, suffix)
    for number, row in enumerate(rows, start=1):
        source = f"{data.input}:{number}"
        image = row[data.image_column]
        image = image.decode("utf-8", "surrogateescape") if isinstance(image, bytes) else image
        if not isinstance(image, str) or not image.strip():
            yield RawRecord(source=source, skip="missing_file")
            continue
        captions = [item for column in data.caption_columns for item in _items(row[column])]
        yield RawRecord(source=source, captions=captions, image_url=join_url(base, image.strip()))


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_columns(url: str, have: list[str], want: list[str]) -> None:
    missing = [c for c in want if c not in have]
    if missing:
        raise ValueError(f"data.input={url!r} has no column(s) {missing} (it has {have}); fix data.image_column / "
                         "data.caption_columns")


def _csv_rows(url: str, columns: list[str], suffix: str) -> Iterator[dict[str, Any]]:
    with open_binary(url) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.DictReader(text, delimiter="\t" if suffix == ".tsv" else ",")
        _check_columns(url, list(reader.fieldnames or []), columns)
        for row in reader:
            yield {c: _raw_text(row[c]) for c in columns}


def _raw_text(cell: str | None) -> str | bytes | None:
    """A cell whose bytes were not UTF-8 goes back to bytes: prep counts it instead of guessing."""
    if cell is None:
        return None
    try:
        cell.encode("utf-8")
        return cell
    except UnicodeEncodeError:  # surrogate-escaped bytes
        return cell.encode("utf-8", "surrogateescape")


def _parquet_rows(url: str, columns: list[str]) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:  # a dependency of the project; only a broken install lacks it
        raise ImportError("data.input is a parquet table, which needs pyarrow: pip install pyarrow") from err
    with tempfile.TemporaryDirectory(prefix="ito-table-") as tmp:
        path = str(Path(url).expanduser())
        if is_s3(url):
            path = str(Path(tmp, "table.parquet"))
            with open_binary(url) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        table = pq.ParquetFile(path)
        _check_columns(url, table.schema_arrow.names, columns)
        for batch in table.iter_batches(batch_size=_BATCH_ROWS, columns=list(dict.fromkeys(columns))):
            yield from batch.to_pylist()
