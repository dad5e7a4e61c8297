"""DeepSpeed checkpoints committed to an artifact store, with our own completion marker.

DeepSpeed's ``latest`` file is written by rank 0 before other ranks' shards may be on disk, so
it is not a commit marker: we save with ``save_latest=False`` and commit ``manifest.json`` in
the tag folder only after ``save_checkpoint`` returned (it ends in a barrier) and, for remote
stores, after every node uploaded its files. Resume picks the newest committed tag; partial
tags are never chosen and are deleted once a newer tag is committed.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch.distributed as dist

from ito_core.storage import ArtifactStore, commit, is_committed

log = logging.getLogger(__name__)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def committed_tags(store: ArtifactStore, key: str) -> list[str]:
    return [tag for tag in store.list_dirs(key) if tag.startswith("step_") and is_committed(store, f"{key}/{tag}")]


def checkpoint_dir(store: ArtifactStore, key: str, staging: Path) -> Path:
    """Where DeepSpeed reads/writes: the store itself when local, else a local staging folder."""
    return store.local_dir(key) or staging


def save(engine: Any, *, store: ArtifactStore, key: str, staging: Path, step: int,
         train_state: dict[str, Any], keep: int) -> None:
    tag, local = tag_for(step), checkpoint_dir(store, key, staging)
    engine.save_checkpoint(str(local), tag=tag, client_state={"train_state": train_state}, save_latest=False)
    if store.local_dir(key) is None and _local_rank() == 0:
        store.upload_dir(local / tag, f"{key}/{tag}")  # each node uploads the shards its ranks wrote
    dist.barrier()
    if dist.get_rank() == 0:
        commit(store, f"{key}/{tag}", {"step": step, **train_state})
        prune(store, key, keep=keep)
        log.info("checkpoint %s committed to %s", tag, store.url(f"{key}/{tag}"))
    dist.barrier()
    if store.local_dir(key) is None and _local_rank() == 0:
        shutil.rmtree(local / tag, ignore_errors=True)  # uploaded: the staging copy is not needed


def prune(store: ArtifactStore, key: str, *, keep: int) -> None:
    """Keep the newest ``keep`` committed tags; drop older ones and partial tags older than the newest."""
    committed = committed_tags(store, key)
    if not committed:
        return
    newest = committed[-1]
    for tag in store.list_dirs(key):
        stale = tag in committed[:-keep] or (tag not in committed and tag < newest)
        if stale:
            store.delete_dir(f"{key}/{tag}")


def restore(engine: Any, *, store: ArtifactStore, key: str, staging: Path) -> dict[str, Any] | None:
    """Load the newest committed checkpoint into ``engine``; return its train state (None = fresh start)."""
    tags = committed_tags(store, key)
    if not tags:
        return None
    tag, local = tags[-1], checkpoint_dir(store, key, staging)
    if store.local_dir(key) is None and _local_rank() == 0:
        store.download_dir(f"{key}/{tag}", local / tag)
    dist.barrier()
    _, client_state = engine.load_checkpoint(str(local), tag=tag)
    log.info("resumed from %s", store.url(f"{key}/{tag}"))
    return client_state["train_state"]


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))
