"""DeepSpeed checkpoints committed to an artifact store, with our own completion marker.

DeepSpeed's ``latest`` file is written by rank 0 before other ranks' shards may be on disk, so
it is not a commit marker: we save with ``save_latest=False`` and commit ``manifest.json`` in
the tag folder only after ``save_checkpoint`` returned (it ends in a barrier) and, for remote
stores, after every node uploaded its files. Resume picks the newest committed tag; partial
tags are never chosen and are deleted once a newer tag is committed. Weights that are not
finite are never saved, so a diverged run cannot commit over the last good checkpoint.

The manifest records the world size and ZeRO stage that wrote the shards. Resuming at another
world size (ZeRO-1/2/3) converts the tag to a DeepSpeed universal checkpoint in node-local scratch
(``ds_to_universal --inject_missing_state``) and loads that with ``checkpoint.load_universal``.
ZeRO-0 shards hold whole weights and optimizer state, so they load at any world size as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ito_core.artifacts import committed, read_manifest
from ito_core.distributed import all_ranks
from ito_core.storage import ArtifactStore, commit, disk_full_error

log = logging.getLogger(__name__)
# A rank's own ZeRO shard files: [bf16_]zero_pp_rank_<rank>_mp_rank_<mp>_{optim,model}_states.pt
RANK_SHARD = re.compile(r"(?:^|/)(?:bf16_)?zero_pp_rank_(\d+)_")


@dataclass(frozen=True)
class ResumePoint:
    """The newest committed tag and how to load it at this world size."""

    tag: str
    saved_world_size: int
    universal: bool  # load through a universal checkpoint (saved at another world size)


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


def committed_tags(store: ArtifactStore, key: str) -> list[str]:
    return [tag for tag in store.list_dirs(key) if tag.startswith("step_") and committed(store, f"{key}/{tag}")]


def checkpoint_dir(store: ArtifactStore, key: str, staging: Path) -> Path:
    """Where DeepSpeed reads/writes: the store itself when local, else a local staging folder."""
    return store.local_dir(key) or staging


def save(engine: Any, *, store: ArtifactStore, key: str, staging: Path, step: int,
         train_state: dict[str, Any], keep: int) -> None:
    if not all_ranks(_weights_finite(engine), engine.device):
        raise FloatingPointError(
            f"weights are not finite after step {step}: not saving, so the newest committed checkpoint under "
            f"{store.url(key)} stays the last good one; resume from it with a lower train.lr or train.grad_clip")
    tag, local, remote = tag_for(step), checkpoint_dir(store, key, staging), store.local_dir(key) is None
    if remote and _local_rank() == 0:  # a crashed save of this tag may have left files another world size wrote
        shutil.rmtree(local / tag, ignore_errors=True)
    dist.barrier()
    try:
        engine.save_checkpoint(str(local), tag=tag, client_state={"train_state": train_state}, save_latest=False)
    except (OSError, RuntimeError) as err:
        disk = "cluster.scratch_dir (node-local staging)" if remote else "storage.root"
        full = disk_full_error(err, local / tag, what=f"checkpoint {tag}", fix=(
            f"Nothing was committed: the newest committed checkpoint under {store.url(key)} is untouched and the "
            f"partial {tag} is never resumed from. Free space there (delete {local / tag}), point {disk} at a "
            "larger disk, or lower train.keep_checkpoints; then resume."))
        if full is None:
            raise
        raise full from err
    if remote and _local_rank() == 0:
        store.upload_dir(local / tag, f"{key}/{tag}")  # each node uploads the shards its ranks wrote
    dist.barrier()
    if dist.get_rank() == 0:
        shards = {"world_size": dist.get_world_size(), "zero_stage": engine.zero_optimization_stage()}
        commit(store, f"{key}/{tag}", {"step": step, **shards, **train_state})
        prune(store, key, keep=keep)
        log.info("checkpoint %s committed to %s", tag, store.url(f"{key}/{tag}"))
    dist.barrier()
    if remote and _local_rank() == 0:
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


def find_resume_point(store: ArtifactStore, key: str, *, world_size: int, zero_stage: int) -> ResumePoint | None:
    """The newest committed tag (None = fresh start); raise ``ValueError`` if it cannot load with this setup."""
    tags = committed_tags(store, key)
    if not tags:
        return None
    manifest = read_manifest(store, f"{key}/{tags[-1]}")
    saved_world, saved_stage = manifest.get("world_size", world_size), manifest.get("zero_stage", zero_stage)
    if saved_stage != zero_stage:
        raise ValueError(
            f"config deepspeed.zero_stage: checkpoint {store.url(f'{key}/{tags[-1]}')} was written with ZeRO stage "
            f"{saved_stage}, this run uses {zero_stage}; resume with deepspeed=zero{saved_stage} (a stage change "
            "is not supported), or start a new run key")
    universal = saved_world != world_size and zero_stage > 0
    return ResumePoint(tag=tags[-1], saved_world_size=saved_world, universal=universal)


def restore(engine: Any, point: ResumePoint, *, store: ArtifactStore, key: str, staging: Path) -> dict[str, Any]:
    """Load ``point`` into ``engine`` (built with ``load_universal=point.universal``); return its train state.

    From a remote store each node fetches into its ``staging`` (node-local scratch) only what its ranks load: the
    shared model file and their own ZeRO shards; a universal conversion reads every shard, so it fetches all.
    """
    tag, local, remote = point.tag, checkpoint_dir(store, key, staging), store.local_dir(key) is None
    include = needed_by(ranks_on_this_node()) if remote and not point.universal else None  # all ranks: collective
    if remote and _local_rank() == 0:
        store.download_dir(f"{key}/{tag}", local / tag, include=include)
    load_dir = staging / "universal" if point.universal else local
    if point.universal and _local_rank() == 0:  # every node converts its own copy into its local staging
        to_universal(local / tag, load_dir / tag)
    dist.barrier()
    load_path, client_state = engine.load_checkpoint(str(load_dir), tag=tag)
    if load_path is None:
        raise FileNotFoundError(f"DeepSpeed found no checkpoint {tag} in {load_dir} (see its log above)")
    dist.barrier()
    if _local_rank() == 0:  # loaded: the node's copies are not needed any more
        if point.universal:
            shutil.rmtree(load_dir / tag, ignore_errors=True)
        if remote:
            shutil.rmtree(local / tag, ignore_errors=True)
    how = f" (saved by {point.saved_world_size} ranks, via a universal checkpoint)" if point.universal else ""
    log.info("resumed from %s%s", store.url(f"{key}/{tag}"), how)
    return client_state["train_state"]


def ranks_on_this_node() -> set[int]:
    """Global ranks that share this rank's host (one all-gather)."""
    hosts: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, socket.gethostname())
    return {rank for rank, host in enumerate(hosts) if host == socket.gethostname()}


def needed_by(ranks: set[int]) -> Callable[[str], bool]:
    """Which files of a tag ``ranks`` load at the world size that saved it: every file but other ranks' ZeRO
    shards. DeepSpeed reads only its own rank's shards unless ``zero_optimization.elastic_checkpoint`` is on (we
    never set it); the 2-node resume tests would fail on a missing file otherwise."""
    def include(name: str) -> bool:
        shard = RANK_SHARD.search(name)
        return shard is None or int(shard.group(1)) in ranks

    return include


def to_universal(tag_dir: Path, out_dir: Path) -> None:
    """Convert one ZeRO-1/2/3 tag folder into a DeepSpeed universal checkpoint at ``out_dir``."""
    from deepspeed.checkpoint import ds_to_universal

    shutil.rmtree(out_dir, ignore_errors=True)  # a conversion a crash left half-done
    args = argparse.Namespace(input_folder=str(tag_dir), output_folder=str(out_dir), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    with contextlib.redirect_stdout(io.StringIO()) as chatter:  # it prints every step; keep it for errors
        try:
            ds_to_universal.main(args)
        except Exception as err:
            raise RuntimeError(f"converting {tag_dir} to a universal checkpoint failed: {err}\n"
                               f"{chatter.getvalue()[-2000:]}") from err
    log.info("converted %s to a universal checkpoint in %s", tag_dir, out_dir)


def _weights_finite(engine: Any) -> bool:
    # ZeRO-3 keeps only this rank's partition of each parameter, in ``ds_tensor``.
    return all(bool(torch.isfinite(getattr(p, "ds_tensor", p)).all()) for p in engine.module.parameters())


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))
