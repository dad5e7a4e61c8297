"""The storage root is usable before any stage writes to it: credentials present, bucket reachable, writes and
deletes allowed (one small object put and deleted under a scratch key); a local root must be a writable folder.

S3 calls get a few seconds, not ``storage.retry_deadline_s``: a preflight answers in seconds, and errors that no
retry fixes (no credentials, access denied, no bucket) are never retried."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import uuid
from pathlib import Path

from ito_core.artifacts import PREFLIGHT, member_key, preflight_probe_key
from ito_core.config import StorageConfig
from ito_core.preflight.finding import Finding, failed, ok
from ito_core.storage import S3Store, build_store

CHECK = "storage"
PROBE_DEADLINE_S = 5.0  # how long transient S3 failures (endpoint down) are retried here
CREDENTIALS_FIX = ("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment, never in "
                   "configs")


def check_storage(cfg: StorageConfig) -> Finding:
    where = f"config storage.root={cfg.root!r}"
    if cfg.kind != "s3":
        return _check_local(Path(cfg.root), where)
    store = build_store(dataclasses.replace(cfg, retry_deadline_s=min(cfg.retry_deadline_s, PROBE_DEADLINE_S)))
    assert isinstance(store, S3Store)
    if not store.has_credentials():
        return failed(CHECK, f"{where}: no AWS credentials found; {CREDENTIALS_FIX}")
    probe = preflight_probe_key(uuid.uuid4().hex)
    try:
        store.write_text(member_key(probe, "probe.txt"), "ito-sweep preflight: safe to delete\n")
        store.delete_dir(probe)
    except Exception as err:  # noqa: BLE001 - any store error is the finding; the message says what to fix
        return failed(CHECK, f"{where}: {err}")
    return ok(CHECK, f"{store.url('')} is writable (put and delete of {store.url(PREFLIGHT)}/...)")


def _check_local(root: Path, where: str) -> Finding:
    """Without creating the root (``plan`` writes nothing): a temporary file in it, else write access to the
    nearest existing parent, where it will be created."""
    root = root.expanduser().resolve()
    existing = next(p for p in (root, *root.parents) if p.exists())
    if not existing.is_dir():
        return failed(CHECK, f"{where}: {existing} is a file, not a folder; point storage.root at a folder")
    if existing != root:
        if not os.access(existing, os.W_OK | os.X_OK):
            return failed(CHECK, f"{where}: cannot create it in {existing} (no write access); point storage.root at "
                                 "a writable folder")
        return ok(CHECK, f"{root} will be created in the writable folder {existing}")
    try:
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        return failed(CHECK, f"{where}: cannot write there ({err.strerror}); point storage.root at a writable folder")
    return ok(CHECK, f"{root} is writable")
