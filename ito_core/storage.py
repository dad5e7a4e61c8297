"""Artifact storage: a local directory or an S3 prefix behind one small interface.

Every artifact is a folder of files committed by writing its ``manifest.json`` LAST; a folder
without a manifest is incomplete and is never read as a result. Single files are written
atomically (tmp + rename locally; S3 PUTs are atomic per object). S3 calls retry with
exponential backoff (tenacity) on transient errors.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from ito_core.config import StorageConfig

MANIFEST = "manifest.json"


class ArtifactStore(Protocol):
    """``upload_dir`` never copies a ``manifest.json``: only ``commit`` writes it, last."""

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


def is_committed(store: ArtifactStore, key: str) -> bool:
    return store.exists(f"{key}/{MANIFEST}")


def commit(store: ArtifactStore, key: str, manifest: dict[str, Any]) -> None:
    """Mark the artifact at ``key`` complete: call only after all its files are written."""
    store.write_json(f"{key}/{MANIFEST}", manifest)


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = str(Path(root).resolve())

    def _path(self, key: str) -> Path:
        return Path(self.root, key)

    def url(self, key: str) -> str:
        return str(self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def read_json(self, key: str) -> Any:
        return json.loads(self._path(key).read_text())

    def write_json(self, key: str, obj: Any) -> None:
        self.write_text(key, json.dumps(obj, indent=2, sort_keys=True))

    def write_text(self, key: str, text: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, path)

    def upload_dir(self, local_dir: Path, key: str) -> None:
        target = self._path(key)
        if Path(local_dir).resolve() != target.resolve():
            shutil.copytree(local_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))

    def download_dir(self, key: str, local_dir: Path) -> Path:
        return self._path(key)  # already local: read in place

    def list_dirs(self, key: str) -> list[str]:
        path = self._path(key)
        return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []

    def delete_dir(self, key: str) -> None:
        shutil.rmtree(self._path(key), ignore_errors=True)

    def local_dir(self, key: str) -> Path | None:
        return self._path(key)


def _is_transient(err: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError, EndpointConnectionError

    if isinstance(err, ClientError):
        return err.response.get("Error", {}).get("Code", "") in {"SlowDown", "InternalError", "503", "500",
                                                                   "RequestTimeout"}
    return isinstance(err, ConnectionError | EndpointConnectionError | OSError)


_s3_retry = retry(retry=retry_if_exception(_is_transient), wait=wait_exponential(multiplier=0.5, max=10),
                  stop=stop_after_delay(120), reraise=True)


class S3Store:
    """``s3://bucket/prefix`` on AWS or any S3-compatible endpoint (credentials from the AWS env)."""

    def __init__(self, root: str, *, endpoint_url: str = "", region: str = "") -> None:
        import boto3

        bucket, _, prefix = root.removeprefix("s3://").partition("/")
        self.root, self.bucket, self.prefix = root.rstrip("/"), bucket, prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}".lstrip("/")

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @_s3_retry
    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise

    @_s3_retry
    def read_json(self, key: str) -> Any:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read())

    def write_json(self, key: str, obj: Any) -> None:
        self.write_text(key, json.dumps(obj, indent=2, sort_keys=True))

    @_s3_retry
    def write_text(self, key: str, text: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=text.encode())

    @_s3_retry
    def _upload_file(self, path: Path, key: str) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def upload_dir(self, local_dir: Path, key: str) -> None:
        for path in sorted(Path(local_dir).rglob("*")):
            if path.is_file() and path.name != MANIFEST:
                self._upload_file(path, f"{key}/{path.relative_to(local_dir).as_posix()}")

    @_s3_retry
    def _list(self, prefix: str, delimiter: str = "") -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter=delimiter)
        return [item for page in pages for item in page.get("Contents", []) + page.get("CommonPrefixes", [])]

    @_s3_retry
    def _download_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, key, str(path))

    def download_dir(self, key: str, local_dir: Path) -> Path:
        prefix = self._key(key).rstrip("/") + "/"
        for item in self._list(prefix):
            self._download_file(item["Key"], Path(local_dir) / item["Key"][len(prefix):])
        return Path(local_dir)

    def list_dirs(self, key: str) -> list[str]:
        prefix = self._key(key).rstrip("/") + "/"
        return sorted(item["Prefix"][len(prefix):].rstrip("/") for item in self._list(prefix, "/")
                      if "Prefix" in item)

    @_s3_retry
    def delete_dir(self, key: str) -> None:
        keys = [{"Key": item["Key"]} for item in self._list(self._key(key).rstrip("/") + "/")]
        for start in range(0, len(keys), 1000):
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[start:start + 1000]})

    def local_dir(self, key: str) -> Path | None:
        return None


def build_store(cfg: StorageConfig) -> ArtifactStore:
    if cfg.kind == "s3":
        return S3Store(cfg.root, endpoint_url=cfg.endpoint_url, region=cfg.region)
    return LocalStore(cfg.root)
