"""The S3 store (AWS or any S3-compatible endpoint) and the retry policy every S3 call goes through.

S3 calls retry transient failures (connection refused or reset, timeouts, 5xx, throttling) with
exponential backoff for at most ``retry_deadline_s``, then raise ``StorageError`` naming the
endpoint and what to check. Credentials come from the standard AWS sources (env vars, profile,
instance role), never from configs, and are scrubbed from every message we raise or log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_before_delay, wait_exponential, wait_random

from ito_core.storage.base import MANIFEST, StorageError, causes, checked_key

log = logging.getLogger(__name__)

RETRY_DEADLINE_S = 120.0  # how long S3 calls keep retrying transient failures before giving up
# Directory transfers (checkpoints: a few large shards per node): files in parallel, each in parallel parts.
# bench/checkpoint_io.py measured these against one file at a time with boto3's defaults.
FILES_AT_ONCE, PARTS_AT_ONCE, PART_MB = 8, 8, 32
T = TypeVar("T")

_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeoutException",
                    "InternalError", "ServiceUnavailable", "503", "500", "502", "504"}
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_AUTH_CODES = {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
               "InvalidToken", "TokenRefreshRequired"}


def split_s3_url(url: str, *, what: str = "url", need_key: bool = False) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key`` (the key may be empty unless ``need_key``): the one S3 URL parser.
    ``ValueError`` naming ``what`` (a config key, or "url") for anything else."""
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not url.startswith("s3://") or not bucket or (need_key and not key):
        raise ValueError(f"{what}={url!r}: expected {'s3://bucket/key' if need_key else 's3://bucket[/prefix]'}")
    return bucket, key


def _error_code(err: BaseException) -> tuple[str, int] | None:
    """(code, HTTP status) of the first ClientError in ``err``'s chain."""
    from botocore.exceptions import ClientError

    for e in causes(err):
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
    return any(isinstance(e, ConnectionError | HTTPClientError | IncompleteReadError) for e in causes(err))


class S3Calls:
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
        if any(isinstance(e, NoCredentialsError | PartialCredentialsError) for e in causes(err)):
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
        bucket, prefix = split_s3_url(root, what="storage.root")
        self.root, self.bucket, self.prefix = root.rstrip("/"), bucket, prefix.strip("/")
        self._s3 = S3Calls(endpoint_url=endpoint_url, region=region, retry_deadline_s=retry_deadline_s)
        self.client = self._s3.client

    def has_credentials(self) -> bool:
        """Whether boto3 finds credentials (env vars, profile files, instance role) for this store's calls."""
        return self._s3.session.get_credentials() is not None

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
        """Upload every file under ``local_dir`` (but a manifest), several files at once."""
        if not Path(local_dir).is_dir():
            raise FileNotFoundError(f"upload_dir: {local_dir} is not a directory")
        uploads = {}
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file() and path.name != MANIFEST:
                dest = self._key(f"{key}/{path.relative_to(local_dir).as_posix()}")
                uploads[f"upload {path} to s3://{self.bucket}/{dest}"] = (self.client.upload_file, str(path),
                                                                         self.bucket, dest)
        self._transfer(uploads)

    def _transfer(self, calls: dict[str, tuple[Callable[..., Any], ...]]) -> None:
        """Run ``{what: (fn, *args)}`` transfers, ``FILES_AT_ONCE`` at a time (each retried on its own; each large
        file is itself sent in ``PART_MB`` parts, ``PARTS_AT_ONCE`` at a time); raise the first failure."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=PART_MB << 20, multipart_chunksize=PART_MB << 20,
                                max_concurrency=PARTS_AT_ONCE)
        with ThreadPoolExecutor(max_workers=FILES_AT_ONCE, thread_name_prefix="s3-transfer") as pool:
            futures = [pool.submit(self._s3.call, what, fn, *args, Config=config)
                       for what, (fn, *args) in calls.items()]
            for future in futures:
                future.result()

    def _list(self, prefix: str, *, delimiter: str = "") -> list[dict[str, Any]]:
        def list_all() -> list[dict[str, Any]]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter=delimiter)
            return [item for page in pages for item in page.get("Contents", []) + page.get("CommonPrefixes", [])]

        return self._s3.call(f"list s3://{self.bucket}/{prefix}", list_all)

    def download_dir(self, key: str, local_dir: Path, *, include: Callable[[str], bool] | None = None) -> Path:
        """Download the folder ``key`` (only the files whose relative path ``include`` accepts), several at once."""
        prefix = self._dir_prefix(key)
        objects = [item["Key"] for item in self._list(prefix) if not item["Key"].endswith("/")]
        if not objects:
            raise FileNotFoundError(f"no artifact at {self.url(key)}")
        downloads = {}
        for obj in objects:
            relative = obj[len(prefix):]
            if include is None or include(relative):
                path = Path(local_dir) / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                downloads[f"download s3://{self.bucket}/{obj}"] = (self.client.download_file, self.bucket, obj,
                                                                   str(path))
        self._transfer(downloads)
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
