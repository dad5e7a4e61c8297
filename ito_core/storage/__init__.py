"""Artifact storage: a local directory or an S3 prefix behind one small interface.

- ``base``: the ``ArtifactStore`` protocol, store-key checks and ``commit`` (manifest written last);
- ``local``: ``LocalStore`` (atomic tmp + rename writes);
- ``s3``: ``S3Store``, the one S3 URL parser and the bounded-retry policy of every S3 call;
- ``stream``: ranged, reconnecting reads of user data on S3 (shards, raw images, eval sets).
"""

from __future__ import annotations

import os
from typing import Protocol

from ito_core.storage.base import (
    MANIFEST,
    ArtifactStore,
    StorageError,
    checked_key,
    commit,
    disk_full_error,
    manifest_key,
)
from ito_core.storage.local import LocalStore
from ito_core.storage.s3 import S3Store, split_s3_url
from ito_core.storage.stream import list_s3_objects, open_s3_object

__all__ = ["MANIFEST", "ArtifactStore", "LocalStore", "S3Store", "StorageError", "StoreSettings", "build_store",
           "checked_key",
           "commit", "disk_full_error", "export_shard_endpoint", "list_s3_objects", "manifest_key", "open_s3_object",
           "split_s3_url"]


class StoreSettings(Protocol):
    """What a store is built from: the fields of ``storage=`` (``ito_core.config.StorageConfig``), named here so the
    lowest layer never imports the config."""

    kind: str  # local | s3
    root: str  # local directory, or s3://bucket/prefix
    endpoint_url: str
    region: str
    retry_deadline_s: float


def export_shard_endpoint(cfg: StoreSettings) -> None:
    """Let the shard reader (which streams s3:// with boto3's own env config) reach a custom endpoint."""
    if cfg.endpoint_url:
        os.environ.setdefault("AWS_ENDPOINT_URL_S3", cfg.endpoint_url)


def build_store(cfg: StoreSettings) -> ArtifactStore:
    if cfg.kind == "s3":
        return S3Store(cfg.root, endpoint_url=cfg.endpoint_url, region=cfg.region,
                       retry_deadline_s=cfg.retry_deadline_s)
    return LocalStore(cfg.root)
