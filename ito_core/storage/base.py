"""The store interface and its commit rule, shared by the local and S3 stores.

Every artifact is a folder of files committed by writing its ``manifest.json`` LAST; a folder
without a manifest is incomplete and is never read as a result. Single files are written
atomically (tmp + rename locally; S3 PUTs are atomic per object).
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

MANIFEST = "manifest.json"
LOW_SPACE_BYTES = 8 << 20  # a write that failed with less free space than this ran out of disk


class StorageError(RuntimeError):
    """A store call failed for a reason outside this program: endpoint down, bad credentials, no bucket."""


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
    def download_dir(self, key: str, local_dir: Path, *,
                     include: Callable[[str], bool] | None = None) -> Path: ...
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


def manifest_key(key: str) -> str:
    """The key of the artifact ``key``'s manifest (its commit marker)."""
    return f"{key}/{MANIFEST}"


def commit(store: ArtifactStore, key: str, manifest: dict[str, Any]) -> None:
    """Mark the artifact at ``key`` complete: call only after all its files are written."""
    store.write_json(manifest_key(key), manifest)


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and what it wraps (boto3's S3UploadFailedError and s3transfer's errors hide botocore's)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop()
        if e is not None and id(e) not in seen:
            seen.add(id(e))
            yield e
            todo += [e.__cause__, e.__context__, getattr(e, "last_exception", None)]


def disk_full_error(err: BaseException, path: Path, *, what: str, fix: str) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming ``what``, ``path`` and ``fix`` if ``err`` (raised while writing under
    ``path``) means the disk (or quota) is full, else None. torch.save reports a full disk as a bare
    RuntimeError ("iostream error", "unexpected pos") without an errno: an almost full filesystem is the
    tell then."""
    existing = next(p for p in (Path(path), *Path(path).parents) if p.exists())
    free = shutil.disk_usage(existing).free
    codes = {e.errno for e in causes(err) if isinstance(e, OSError) and e.errno}
    if not codes & {errno.ENOSPC, errno.EDQUOT} and (codes or free >= LOW_SPACE_BYTES):
        return None
    return OSError(errno.ENOSPC, f"disk full: no space left on device writing {what} under {path} "
                                 f"({free / 2**20:.1f} MiB free; {type(err).__name__}: {err}). {fix}")
