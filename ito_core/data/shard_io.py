"""Open shards and read their raw samples: local paths, file:// and pipe: through webdataset, s3:// through boto3.

A raw sample is webdataset's dict ``{"__key__", "__url__", "jpg": bytes, "json": bytes}``; ``decode_sample``
turns one into an image and its metadata.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from ito_core.storage import open_s3_object


def open_shard(url: str) -> Any:
    """The one place shard URLs are opened. ``s3://bucket/key`` streams through boto3 (webdataset has no
    s3 support): endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (else AWS), credentials from
    the AWS env, and a dropped connection resumes at the current byte. Anything else (local paths,
    file://, pipe:) goes through webdataset's gopen."""
    if url.startswith("s3://"):
        return open_s3_object(url)
    return gopen(url, "rb")


def iter_shard_samples(urls: list[str], *, on_bytes: Callable[[int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples of ``urls`` in order. ``on_bytes(n)`` is told of every read; each shard is read to its end."""
    yield from group_by_keys(_checked_members(tar_file_expander(_opened(urls, on_bytes))))


def _checked_members(members: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Member names only become sample keys, never paths we write; a name that would escape a folder
    (absolute or "..") still means a crafted tar, so the shard is refused (webdataset skips links itself)."""
    for member in members:
        path = PurePosixPath(member.get("fname", ""))  # {} is webdataset's end-of-shard marker
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"shard {member.get('__url__')}: refusing tar member {member['fname']!r} (absolute "
                             "path or '..'): prep never writes one, so the shard was altered; re-create it")
        yield member


class _CountedReader:
    """A read-only stream that reports how many bytes each read returned."""

    def __init__(self, stream: Any, on_bytes: Callable[[int], None]) -> None:
        self.stream, self.on_bytes = stream, on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.on_bytes(len(data))
        return data

    def __repr__(self) -> str:  # webdataset names the stream in its read errors
        return repr(self.stream)


def _opened(urls: list[str], on_bytes: Callable[[int], None] | None) -> Iterator[dict[str, Any]]:
    for url in urls:
        # tar_file_expander reads a stream up to the tar's end marker before asking for the next one: read the
        # rest (the tar's zero padding) so a shard counts as its whole size, then close it.
        with open_shard(url) as stream:
            reader = stream if on_bytes is None else _CountedReader(stream, on_bytes)
            yield {"url": url, "stream": reader}
            if on_bytes is not None:
                while reader.read(1 << 16):
                    pass


def decode_sample(sample: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """A raw shard sample -> (uint8 RGB image [H, W, 3], its JSON metadata)."""
    try:
        image_HWC = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
        meta = json.loads(sample["json"])
    except Exception as exc:  # KeyError, PIL's OSError/SyntaxError, JSONDecodeError: all mean a bad shard
        raise ValueError(
            f"cannot decode sample {sample.get('__key__')!r} of {sample.get('__url__')}: {exc!r}; re-run prep"
        ) from exc
    return image_HWC, meta


def pick_captions(captions: list[str], num: int, *, rng: random.Random) -> list[str]:
    """``num`` captions: distinct when there are enough, else every caption once before any repeats."""
    if not captions:
        raise ValueError("sample has no captions: re-run prep (it drops caption-less samples)")
    order = rng.sample(captions, len(captions))
    return [order[i % len(order)] for i in range(num)]
