"""Artifact storage: a local directory or an S3 prefix behind one small interface.

Every artifact is a folder of files committed by writing its ``manifest.json`` LAST; a folder
without a manifest is incomplete and is never read as a result. Single files are written
atomically (tmp + rename locally; S3 PUTs are atomic per object).

S3 calls retry transient failures (connection refused or reset, timeouts, 5xx, throttling) with
exponential backoff for at most ``retry_deadline_s``, then raise ``StorageError`` naming the
endpoint and what to check. Credentials come from the standard AWS sources (env vars, profile,
instance role), never from configs, and are scrubbed from every message we raise or log.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_before_delay, wait_exponential, wait_random

from ito_core.config import StorageConfig

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RETRY_DEADLINE_S = 120.0  # how long S3 calls keep retrying transient failures before giving up
LOW_SPACE_BYTES = 8 << 20  # a write that failed with less free space than this ran out of disk
T = TypeVar("T")


class StorageError(RuntimeError):
    """A store call failed for a reason outside this program: endpoint down, bad credentials, no bucket."""


def disk_full_error(err: BaseException, path: Path, *, what: str, fix: str) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming ``what``, ``path`` and ``fix`` if ``err`` (raised while writing under
    ``path``) means the disk (or quota) is full, else None. torch.save reports a full disk as a bare
    RuntimeError ("iostream error", "unexpected pos") without an errno: an almost full filesystem is the
    tell then."""
    existing = next(p for p in (Path(path), *Path(path).parents) if p.exists())
    free = shutil.disk_usage(existing).free
    codes = {e.errno for e in _causes(err) if isinstance(e, OSError) and e.errno}
    if not codes & {errno.ENOSPC, errno.EDQUOT} and (codes or free >= LOW_SPACE_BYTES):
        return None
    return OSError(errno.ENOSPC, f"disk full: no space left on device writing {what} under {path} "
                                 f"({free / 2**20:.1f} MiB free; {type(err).__name__}: {err}). {fix}")


class ArtifactStore(Protocol):
    """Keys are ``/``-separated paths under the store's root. ``exists`` and ``read_json`` address single
    files; ``upload_dir`` never copies a ``manifest.json`` (only ``commit`` writes it, last);
    ``download_dir`` and ``read_json`` raise ``FileNotFoundError`` for a missing key."""

    root: str

    def url(self, key: str) -> str: ...
    def exists(self, key: str) -> bool: ...
    def read_json(self, key: str) -> Any: ...
    def write_json(self, key: str, obj: Any) -> None: ...
    def write_text(self, key: str, text: str) -> None: ...
    def upload_dir(self, local_dir: Path, key: str) -> None: ...
    def download_dir(self, key: str, local_dir: Path) -> Path: ...
    def list_dirs(self, key: str) -> list[str]: ...
    def delete_dir(self, key: str) -> None: ...
    def local_dir(self, key: str) -> Path | None: ...


def checked_key(key: str) -> str:
    """``key`` if it stays under the store's root. Keys are built from our own names plus config values
    (sweep and eval set names), so a part that could climb out ("..", ".", an absolute path) or a NUL is
    refused, never resolved: locally it would escape the root, on S3 it names a different object."""
    parts = key.split("/")
    if key.startswith("/") or "\x00" in key or any(part in (".", "..") for part in parts):
        raise ValueError(f"store key {key!r}: absolute, '.'/'..' parts and NUL are not allowed; rename the sweep, "
                         "run or eval set that produced it (use plain names)")
    return key


def is_committed(store: ArtifactStore, key: str) -> bool:
    return store.exists(f"{key}/{MANIFEST}")


def commit(store: ArtifactStore, key: str, manifest: dict[str, Any]) -> None:
    """Mark the artifact at ``key`` complete: call only after all its files are written."""
    store.write_json(f"{key}/{MANIFEST}", manifest)


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).resolve())

    def _path(self, key: str) -> Path:
        return Path(self.root, checked_key(key))

    def url(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def read_json(self, key: str) -> Any:
        return json.loads(self._path(key).read_text())

    def write_json(self, key: str, obj: Any) -> None:
        self.write_text(key, json.dumps(obj, indent=2, sort_keys=True))

    def write_text(self, key: str, text: str) -> None:
        """Readers see the old file or the whole new one, never a part (tmp in the same folder + rename)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
                try:
                    tmp.write(text)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                    os.replace(tmp.name, path)
                finally:
                    Path(tmp.name).unlink(missing_ok=True)  # gone after a successful rename; cleans up a failed one
        except OSError as err:
            full = disk_full_error(err, path, what=key, fix="The old file (if any) is unchanged. Free space there, "
                                   "or point storage.root at a larger disk.")
            if full is None:
                raise
            raise full from err

    def upload_dir(self, local_dir: Path, key: str) -> None:
        if not Path(local_dir).is_dir():
            raise FileNotFoundError(f"upload_dir: {local_dir} is not a directory")
        target = self._path(key)
        if Path(local_dir).resolve() != target.resolve():
            shutil.copytree(local_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))

    def download_dir(self, key: str, local_dir: Path) -> Path:
        path = self._path(key)
        if not path.is_dir():
            raise FileNotFoundError(f"no artifact at {path}")
        return path  # already local: read in place

    def list_dirs(self, key: str) -> list[str]:
        path = self._path(key)
        return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []

    def delete_dir(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)

    def local_dir(self, key: str) -> Path | None:
        return self._path(key)


# ---------------------------------------------------------------------------------------------- S3

_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                    "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_AUTH_CODES = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
               "InvalidToken", "TokenRefreshRequired"}


def _causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps (boto3's S3UploadFailedError and s3transfer's errors hide botocore's)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            yield e
            todo += [e.__cause__, e.__context__, getattr(e, "last_exception", None)]


def _error_code(err: BaseException) -> tuple[str, int] | None:
    """(code, HTTP status) of the first ClientError in ``err``'s chain."""
    from botocore.exceptions import ClientError

    for e in _causes(err):
        if isinstance(e, ClientError):
            return str(e.response.get("Error", {}).get("Code", "")), int(
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return None


def is_transient(err: BaseException) -> bool:
    """Worth retrying: the endpoint could not be reached, dropped the connection, or answered 5xx/throttle."""
    from botocore.exceptions import ConnectionError, HTTPClientError, IncompleteReadError

    if isinstance(err, StorageError):  # retries already ran out
        return False
    code = _error_code(err)
    if code is not None:
        return code[0] in _TRANSIENT_CODES or code[1] >= 500 or code[1] == 429
    return any(isinstance(e, ConnectionError | HTTPClientError | IncompleteReadError) for e in _causes(err))


class _S3Calls:
    """One boto3 client + the retry/explain policy shared by ``S3Store`` and ``S3ObjectStream``."""

    def __init__(self, *, endpoint_url: str = "", region: str = "", retry_deadline_s: float = RETRY_DEADLINE_S,
                 ranged_reads: bool = False) -> None:
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=5, read_timeout=60,
            retries={"total_max_attempts": 1},  # one retry layer (ours, with a deadline), not two
            # Some S3-compatible servers send the whole object's checksum with a byte range; botocore would then
            # reject every resumed read. Ranged readers ask for validation explicitly on full reads instead.
            response_checksum_validation="when_required" if ranged_reads else "when_supported",
        )
        self.session = boto3.session.Session()
        self.client = self.session.client("s3", endpoint_url=endpoint_url or None, region_name=region or None,
                                          config=config)
        self.endpoint = self.client.meta.endpoint_url  # endpoint_url, else AWS_ENDPOINT_URL[_S3], else AWS
        self.retry_deadline_s = retry_deadline_s

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)``, retrying transient failures for ``retry_deadline_s``; ``what`` names the
        operation and object in logs and errors ("read s3://bucket/key")."""
        retrying = Retrying(retry=retry_if_exception(is_transient), reraise=True,
                            wait=wait_exponential(multiplier=0.25, max=5) + wait_random(0, 0.1),
                            stop=stop_before_delay(self.retry_deadline_s), before_sleep=self._log_retry(what))
        try:
            return retrying(fn, *args, **kwargs)
        except Exception as err:
            explained = self._explain(what, err, retrying.statistics)
            if explained is None:
                raise
            raise explained from err

    def _log_retry(self, what: str) -> Callable[[RetryCallState], None]:
        def log_it(state: RetryCallState) -> None:
            err = state.outcome.exception() if state.outcome else None
            log.warning("%s: %s after %.1f s (attempt %d); retrying for up to %g s", what,
                        self.redact(f"{type(err).__name__}: {err}"), state.seconds_since_start or 0.0,
                        state.attempt_number, self.retry_deadline_s)
        return log_it

    def redact(self, text: str) -> str:
        """``text`` with the session's access key, secret and token replaced by ``***``."""
        creds = self.session.get_credentials()
        frozen = creds.get_frozen_credentials() if creds is not None else None
        for secret in (frozen.access_key, frozen.secret_key, frozen.token) if frozen else ():
            text = text.replace(secret, "***") if secret else text
        return text

    def _explain(self, what: str, err: Exception, stats: dict[str, Any]) -> Exception | None:
        """A clear error for what the user must fix, or None to let ``err`` through unchanged."""
        from botocore.exceptions import NoCredentialsError, PartialCredentialsError

        last = self.redact(f"{type(err).__name__}: {err}")
        if is_transient(err):
            return StorageError(
                f"{what} failed: the S3 endpoint {self.endpoint} kept failing for "
                f"{stats.get('delay_since_first_attempt', 0.0):.1f} s ({stats.get('attempt_number', 1)} attempts; "
                f"last error {last}). Check that the S3 server is running and reachable from this machine and that "
                "storage.endpoint_url (or AWS_ENDPOINT_URL_S3) points at it.")
        if any(isinstance(e, NoCredentialsError | PartialCredentialsError) for e in _causes(err)):
            return StorageError(f"{what} failed: no AWS credentials found. Set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the job's environment, never in configs.")
        code = _error_code(err)
        if code is None:
            return None
        if code[0] in _NOT_FOUND_CODES:
            return FileNotFoundError(f"{what}: no such object ({last})")
        if code[0] == "PreconditionFailed":
            return StorageError(f"{what} failed: the object changed while it was being read (artifacts are "
                                "immutable: something overwrote it).")
        if code[0] == "NoSuchBucket":
            return StorageError(f"{what} failed: the bucket does not exist at {self.endpoint}. Create it, or fix "
                                "the bucket in storage.root.")
        if code[0] in _AUTH_CODES or code[1] == 403:
            return StorageError(
                f"{what} failed: {self.endpoint} refused the request ({code[0]}). Check the credentials in "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's permissions.")
        return None


class S3Store:
    """``s3://bucket/prefix`` on AWS or any S3-compatible endpoint (credentials from the AWS env).

    ``exists`` cannot tell a missing object from a missing bucket (HEAD answers 404 for both); every
    other call names a missing bucket.
    """

    def __init__(self, root: str, *, endpoint_url: str = "", region: str = "",
                 retry_deadline_s: float = RETRY_DEADLINE_S) -> None:
        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        if not root.startswith("s3://") or not bucket:
            raise ValueError(f"storage.root={root!r}: an S3 store needs s3://bucket[/prefix]")
        self.root, self.bucket, self.prefix = root.rstrip("/"), bucket, prefix.strip("/")
        self._s3 = _S3Calls(endpoint_url=endpoint_url, region=region, retry_deadline_s=retry_deadline_s)
        self.client = self._s3.client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{checked_key(key)}".strip("/")

    def _dir_prefix(self, key: str) -> str:
        """The listing prefix of the folder ``key`` ("" for the bucket's root)."""
        return f"{self._key(key)}/".lstrip("/")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def exists(self, key: str) -> bool:
        try:
            self._s3.call(f"check {self.url(key)}", self.client.head_object, Bucket=self.bucket, Key=self._key(key))
            return True
        except FileNotFoundError:
            return False

    def read_json(self, key: str) -> Any:
        def read() -> bytes:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

        return json.loads(self._s3.call(f"read {self.url(key)}", read))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_text(key, json.dumps(obj, indent=2, sort_keys=True))

    def write_text(self, key: str, text: str) -> None:
        self._s3.call(f"write {self.url(key)}", self.client.put_object, Bucket=self.bucket, Key=self._key(key),
                      Body=text.encode())

    def upload_dir(self, local_dir: Path, key: str) -> None:
        if not Path(local_dir).is_dir():
            raise FileNotFoundError(f"upload_dir: {local_dir} is not a directory")
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file() and path.name != MANIFEST:
                dest = f"{key}/{path.relative_to(local_dir).as_posix()}"
                self._s3.call(f"upload {path} to {self.url(dest)}", self.client.upload_file, str(path),
                              self.bucket, self._key(dest))

    def _list(self, prefix: str, *, delimiter: str = "") -> list[dict[str, Any]]:
        def list_all() -> list[dict[str, Any]]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter=delimiter)
            return [item for page in pages for item in page.get("Contents", []) + page.get("CommonPrefixes", [])]

        return self._s3.call(f"list s3://{self.bucket}/{prefix}", list_all)

    def download_dir(self, key: str, local_dir: Path) -> Path:
        prefix = self._dir_prefix(key)
        objects = [item["Key"] for item in self._list(prefix) if not item["Key"].endswith("/")]
        if not objects:
            raise FileNotFoundError(f"no artifact at {self.url(key)}")
        for obj in objects:
            path = Path(local_dir) / obj[len(prefix):]
            path.parent.mkdir(parents=True, exist_ok=True)
            self._s3.call(f"download s3://{self.bucket}/{obj}", self.client.download_file, self.bucket, obj,
                          str(path))
        return Path(local_dir)

    def list_dirs(self, key: str) -> list[str]:
        prefix = self._dir_prefix(key)
        return sorted(item["Prefix"][len(prefix):].rstrip("/") for item in self._list(prefix, delimiter="/")
                      if "Prefix" in item)

    def delete_dir(self, key: str) -> None:
        keys = [{"Key": item["Key"]} for item in self._list(self._dir_prefix(key))]
        for start in range(0, len(keys), 1000):
            batch = {"Objects": keys[start:start + 1000], "Quiet": True}
            answer = self._s3.call(f"delete {self.url(key)}", self.client.delete_objects, Bucket=self.bucket,
                                   Delete=batch)
            if answer.get("Errors"):  # DeleteObjects reports per-key failures in a 200 answer
                first = answer["Errors"][0]
                raise StorageError(f"delete {self.url(key)}: {len(answer['Errors'])} objects not deleted, e.g. "
                                   f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}")

    def local_dir(self, key: str) -> Path | None:
        return None


class S3ObjectStream(io.RawIOBase):
    """A forward-only stream over one S3 object that survives dropped connections: a read that fails
    transiently reopens the object at the current byte (``Range``, pinned to the first answer's ETag)
    under the same bounded retries as the store. An unbroken read is checksum-validated when the
    server provides a checksum."""

    def __init__(self, url: str, calls: _S3Calls) -> None:
        super().__init__()
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if not url.startswith("s3://") or not bucket or not key:
            raise ValueError(f"{url!r}: expected s3://bucket/key")
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
def _reader_calls(pid: int, env: tuple[str | None, ...]) -> _S3Calls:
    """One client per process (boto3 clients must not cross a fork) and per AWS environment."""
    return _S3Calls(ranged_reads=True)


def _env_reader_calls() -> _S3Calls:
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
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket:
        raise ValueError(f"{url!r}: expected s3://bucket[/prefix]")
    folder = f"{prefix.strip('/')}/".lstrip("/")
    calls = _env_reader_calls()

    def list_all() -> list[str]:
        pages = calls.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
        return sorted(item["Key"][len(folder):] for page in pages for item in page.get("Contents", [])
                      if not item["Key"].endswith("/"))

    return calls.call(f"list {url}", list_all)


def export_shard_endpoint(cfg: StorageConfig) -> None:
    """Let the shard reader (which streams s3:// with boto3's own env config) reach a custom endpoint."""
    if cfg.endpoint_url:
        os.environ.setdefault("AWS_ENDPOINT_URL_S3", cfg.endpoint_url)


def build_store(cfg: StorageConfig) -> ArtifactStore:
    if cfg.kind == "s3":
        return S3Store(cfg.root, endpoint_url=cfg.endpoint_url, region=cfg.region,
                       retry_deadline_s=cfg.retry_deadline_s)
    return LocalStore(cfg.root)
