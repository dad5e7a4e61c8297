"""Reading user data on S3 with boto3's own configuration (endpoint and credentials from the AWS env):
a ranged stream over one object that survives dropped connections, and folder listings."""

from __future__ import annotations

import functools
import io
import logging
import os
from typing import Any

from ito_core.storage.s3 import S3Calls, is_transient, split_s3_url

log = logging.getLogger(__name__)



class S3ObjectStream(io.RawIOBase):
    """A forward-only stream over one S3 object that survives dropped connections: a read that fails
    transiently reopens the object at the current byte (``Range``, pinned to the first answer's ETag)
    under the same bounded retries as the store. An unbroken read is checksum-validated when the
    server provides a checksum."""

    def __init__(self, url: str, calls: S3Calls) -> None:
        super().__init__()
        bucket, key = split_s3_url(url, need_key=True)
        self.url, self._bucket, self._key, self._s3 = url, bucket, key, calls
        self._pos, self._etag, self.size = 0, "", 0
        self._body: Any = self._s3.call(f"read {url}", self._get)

    def _get(self) -> Any:
        """One GET of the object from the current byte on (the caller retries)."""
        resume = {"Range": f"bytes={self._pos}-", **({"IfMatch": self._etag} if self._etag else {})}
        answer = self._s3.client.get_object(Bucket=self._bucket, Key=self._key,
                                            **(resume if self._pos else {"ChecksumMode": "ENABLED"}))
        self._etag = self._etag or answer.get("ETag", "")
        self.size = self._pos + int(answer.get("ContentLength", 0))
        return answer["Body"]

    def readable(self) -> bool:
        return True

    def _read_chunk(self, size: int) -> bytes:
        if self._body is None:
            if self._pos >= self.size:
                return b""
            self._body = self._get()
        try:
            return self._body.read(size)
        except Exception as err:
            if is_transient(err):  # drop the broken connection: the next try reopens at self._pos
                self._body.close()
                self._body = None
            raise

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._read_chunk(len(buffer))  # no retry machinery per chunk while all is well
        except Exception as err:
            if not is_transient(err):
                raise
            log.warning("%s: connection lost at byte %d (%s); reopening there", self.url, self._pos,
                        type(err).__name__)
            data = self._s3.call(f"read {self.url} from byte {self._pos}", self._read_chunk, len(buffer))
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None
        super().close()


@functools.lru_cache(maxsize=8)
def _reader_calls(pid: int, env: tuple[str | None, ...]) -> S3Calls:
    """One client per process (boto3 clients must not cross a fork) and per AWS environment."""
    return S3Calls(ranged_reads=True)


def _env_reader_calls() -> S3Calls:
    env = tuple(os.environ.get(name) for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                                  "AWS_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION"))
    return _reader_calls(os.getpid(), env)


def open_s3_object(url: str) -> S3ObjectStream:
    """Stream ``s3://bucket/key`` with boto3's own configuration: endpoint from ``AWS_ENDPOINT_URL_S3`` or
    ``AWS_ENDPOINT_URL`` (else AWS), credentials from the AWS env vars / profile."""
    return S3ObjectStream(url, _env_reader_calls())


def list_s3_objects(url: str) -> list[str]:
    """Keys of every object under the folder ``s3://bucket/prefix``, relative to it and sorted; configured
    like ``open_s3_object``. An empty list for a folder with nothing in it."""
    bucket, prefix = split_s3_url(url)
    folder = f"{prefix.strip('/')}/".lstrip("/")
    calls = _env_reader_calls()

    def list_all() -> list[str]:
        pages = calls.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
        return sorted(item["Key"][len(folder):] for page in pages for item in page.get("Contents", [])
                      if not item["Key"].endswith("/"))

    return calls.call(f"list {url}", list_all)

