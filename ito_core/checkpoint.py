"""DeepSpeed checkpoints committed to an artifact store, with our own completion marker.

DeepSpeed's ``latest`` file is written by rank 0 before other ranks' shards may be on disk, so
it is not a commit marker: we save with ``save_latest=False`` and commit ``manifest.json`` in
the tag folder only after ``save_checkpoint`` returned (it ends in a barrier) and, for remote
stores, after every node uploaded its files: in the save call (``train.async_checkpoint=false``)
or from a background write and upload while training goes on (``CheckpointSaver``). Resume picks the newest
committed tag; partial tags (a crash mid-save or mid-upload) are never chosen and are deleted once a
newer tag is committed. Weights that are not
finite are never saved, so a diverged run cannot commit over the last good checkpoint.

The manifest records the world size and ZeRO stage that wrote the shards. Resuming at another
world size (ZeRO-1/2/3) converts the tag to a DeepSpeed universal checkpoint in node-local scratch
(``ds_to_universal --inject_missing_state``) and loads that with ``checkpoint.load_universal``.
ZeRO-0 shards hold whole weights and optimizer state, so they load at any world size as they are.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import io
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ito_core.artifacts import checkpoint_key, committed, read_manifest
from ito_core.checkpoint_snapshot import SnapshotCheckpointEngine
from ito_core.checkpoint_upload import BackgroundTransfer
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
    return [tag for tag in store.list_dirs(key)
            if tag.startswith("step_") and committed(store, checkpoint_key(key, tag))]


def checkpoint_dir(store: ArtifactStore, key: str, staging: Path) -> Path:
    """Where DeepSpeed reads/writes: the store itself when local, else a local staging folder."""
    return store.local_dir(key) or staging


@dataclass
class PendingCommit:
    """A tag whose files are being written or on their way to the store, not yet committed."""

    tag: str
    manifest: dict[str, Any]  # what rank 0 commits once every node uploaded
    write: BackgroundTransfer | None  # this rank's write of its snapshot (asynchronous; None once every rank's ended)
    upload: BackgroundTransfer | None = None  # this node's upload (on its local rank 0, once written; None elsewhere)


class CheckpointSaver:
    """Saves one run's checkpoints; a tag is committed (its manifest written, by rank 0) only once all its files are
    in the store.

    Local store: DeepSpeed writes into the store itself and rank 0 commits in the save call. Remote store: every rank
    writes to node-local ``staging``, then each node's local rank 0 uploads what its ranks wrote, on a background
    thread (``BackgroundTransfer``). Synchronous (``asynchronous=False``): the save call waits for the upload on every
    node. Asynchronous: the save call only copies each rank's checkpoint state into host memory (a
    ``SnapshotCheckpointEngine`` on the engine); every rank writes its files from that copy on a background thread,
    and training goes on. ``poll``, called every step, asks every rank with one all-reduce (only while a tag is
    pending) whether its write ended; once all have, the nodes' uploads start, and the same all-reduce then asks
    whether each node's upload ended; once all have, rank 0 commits. A
    collective rather than per-node markers in the store: rank 0 learns of every node's end (or failure) at the same
    step as the others, polls no bucket, and a dead node fails the collective instead of leaving rank 0 waiting.
    At most one checkpoint is in flight per node (one snapshot per rank in host memory): the next save, and
    ``finish``, wait for it first and log the wait.
    ``held_s``: per tag, the seconds rank 0's training loop was held by it (save, waits, commit).
    """

    def __init__(self, engine: Any, *, store: ArtifactStore, key: str, staging: Path, keep: int,
                 asynchronous: bool) -> None:
        self.engine, self.store, self.key, self.keep = engine, store, key, keep
        self.remote = store.local_dir(key) is None
        self.local = checkpoint_dir(store, key, staging)
        self.asynchronous = asynchronous and self.remote  # a local store has nothing to upload
        self.snapshots: SnapshotCheckpointEngine | None = None
        if self.asynchronous:  # DeepSpeed's save then only copies the state; the files are written in the background
            self.snapshots = engine.checkpoint_engine = SnapshotCheckpointEngine(engine.checkpoint_engine)
        self.pending: PendingCommit | None = None
        self.held_s: dict[str, float] = {}

    def save(self, *, step: int, train_state: dict[str, Any]) -> None:
        tag, start = tag_for(step), time.perf_counter()
        if not all_ranks(_weights_finite(self.engine), self.engine.device):
            raise FloatingPointError(
                f"weights are not finite after step {step}: not saving, so the newest committed checkpoint under "
                f"{self.store.url(self.key)} stays the last good one; resume from it with a lower train.lr or "
                "train.grad_clip")
        self._settle(before=f"saving {tag}")
        self._write(tag, train_state)
        shards = {"world_size": dist.get_world_size(), "zero_stage": self.engine.zero_optimization_stage()}
        manifest = {"step": step, **shards, **copy.deepcopy(train_state)}  # training goes on changing the state
        if self.snapshots is not None:
            snapshot = self.snapshots.take()
            log.info("checkpoint %s: a copy of this rank's state, %.2f GB, held in host memory until written",
                     tag, snapshot.nbytes / 1e9)
            files = functools.partial(snapshot.write, self.snapshots.inner)  # through DeepSpeed's own engine
            write = BackgroundTransfer(f"write of checkpoint {tag}", functools.partial(self._guard_disk, tag, files))
            self.pending = PendingCommit(tag, manifest, write)
        else:
            self.pending = PendingCommit(tag, manifest, write=None, upload=self._start_upload(tag))
        if not self.asynchronous:
            self._settle()
        self._hold(tag, start)

    def poll(self) -> None:
        """Commit the pending tag once every node's upload has ended; call at every step (all ranks)."""
        if self.pending is None:
            return
        pending, start = self.pending, time.perf_counter()
        if pending.write is not None:
            if all_ranks(pending.write.done(), self.engine.device):
                self._upload_written(pending)
        elif all_ranks(pending.upload is None or pending.upload.done(), self.engine.device):
            self._settle()
        self._hold(pending.tag, start)

    def finish(self) -> None:
        """Wait for the last upload and commit it: a run is complete only once its last checkpoint is committed."""
        if self.pending is not None:
            pending, start = self.pending, time.perf_counter()
            self._settle(before="the end of training")
            self._hold(pending.tag, start)

    def _hold(self, tag: str, start: float) -> None:
        self.held_s[tag] = self.held_s.get(tag, 0.0) + time.perf_counter() - start

    def _write(self, tag: str, train_state: dict[str, Any]) -> None:
        """Every rank writes its files of ``tag`` (DeepSpeed's save ends in a barrier)."""
        engine, local = self.engine, self.local
        if self.remote and _local_rank() == 0:  # a crashed save of this tag may have left files another world wrote
            shutil.rmtree(local / tag, ignore_errors=True)
        dist.barrier()
        self._guard_disk(tag, functools.partial(engine.save_checkpoint, str(local), tag=tag, save_latest=False,
                                                client_state={"train_state": train_state}))

    def _guard_disk(self, tag: str, write: Callable[[], Any]) -> None:
        """``write()`` files of ``tag``; a full disk raises an error naming the setting to change."""
        local = self.local
        try:
            write()
        except (OSError, RuntimeError) as err:
            disk = "cluster.scratch_dir (node-local staging)" if self.remote else "storage.root"
            full = disk_full_error(err, local / tag, what=f"checkpoint {tag}", fix=(
                f"Nothing was committed: the newest committed checkpoint under {self.store.url(self.key)} is "
                f"untouched and the partial {tag} is never resumed from. Free space there (delete {local / tag}), "
                f"point {disk} at a larger disk, or lower train.keep_checkpoints; then resume."))
            if full is None:
                raise
            raise full from err

    def _start_upload(self, tag: str) -> BackgroundTransfer | None:
        """Each node's local rank 0 uploads the files its ranks wrote; None on the other ranks."""
        if self.remote and _local_rank() == 0:
            return BackgroundTransfer(f"upload of checkpoint {tag}", functools.partial(self._upload, tag))
        return None

    def _upload_written(self, pending: PendingCommit, *, before: str = "") -> None:
        """Wait for this rank's write of the pending tag; once every rank's succeeded, start the uploads.
        Collective: every rank calls it at the same point."""
        assert pending.write is not None
        self.pending = None  # a failure below leaves nothing pending
        self._await_everywhere(pending.write, pending.tag, done="written", waited_for="the write", before=before,
                               failed="a rank's write failed (that rank logs the error)")
        self.pending, pending.write, pending.upload = pending, None, self._start_upload(pending.tag)

    def _upload(self, tag: str) -> None:
        self.store.upload_dir(self.local / tag, checkpoint_key(self.key, tag))
        shutil.rmtree(self.local / tag, ignore_errors=True)  # uploaded: the staging copy is not needed

    def _settle(self, *, before: str = "") -> None:
        """Wait for this rank's write (if still pending) and this node's upload of the pending tag; once every
        node's upload succeeded, rank 0 commits it. Collective: every rank calls it at the same point."""
        if self.pending is None:
            return
        if self.pending.write is not None:
            self._upload_written(self.pending, before=before)
        pending, self.pending = self.pending, None
        self._await_everywhere(pending.upload, pending.tag, done="uploaded", waited_for="it", before=before,
                               failed="a node's upload failed (its local rank 0 logs the error)")
        if dist.get_rank() == 0:
            key = checkpoint_key(self.key, pending.tag)
            commit(self.store, key, pending.manifest)
            prune(self.store, self.key, keep=self.keep)
            log.info("checkpoint %s committed to %s", pending.tag, self.store.url(key))

    def _await_everywhere(self, transfer: BackgroundTransfer | None, tag: str, *, done: str, waited_for: str,
                          before: str, failed: str) -> None:
        """Wait for this rank's ``transfer`` of ``tag`` (None: none on this rank) and log how long it took; raise
        on every rank if any rank's failed (its own error where it has one). Collective."""
        ok, waited = transfer.wait() if transfer is not None else (True, 0.0)
        if transfer is not None and ok:
            log.info("checkpoint %s %s in %.2f s%s", tag, done, transfer.seconds,
                     f"; waited {waited:.2f} s for {waited_for} before {before}" if before else "")
        if not all_ranks(ok, self.engine.device):
            if transfer is not None and transfer.error is not None:
                raise transfer.error
            raise RuntimeError(f"checkpoint {self.store.url(checkpoint_key(self.key, tag))} was not committed: "
                               f"{failed}; the newest committed checkpoint is untouched: resume from it")


def prune(store: ArtifactStore, key: str, *, keep: int) -> None:
    """Keep the newest ``keep`` committed tags; drop older ones and partial tags older than the newest."""
    committed = committed_tags(store, key)
    if not committed:
        return
    newest = committed[-1]
    for tag in store.list_dirs(key):
        stale = tag in committed[:-keep] or (tag not in committed and tag < newest)
        if stale:
            store.delete_dir(checkpoint_key(key, tag))


def find_resume_point(store: ArtifactStore, key: str, *, world_size: int, zero_stage: int) -> ResumePoint | None:
    """The newest committed tag (None = fresh start); raise ``ValueError`` if it cannot load with this setup."""
    tags = committed_tags(store, key)
    if not tags:
        return None
    newest = checkpoint_key(key, tags[-1])
    manifest = read_manifest(store, newest)
    saved_world, saved_stage = manifest.get("world_size", world_size), manifest.get("zero_stage", zero_stage)
    if saved_stage != zero_stage:
        raise ValueError(
            f"config deepspeed.zero_stage: checkpoint {store.url(newest)} was written with ZeRO stage "
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
        store.download_dir(checkpoint_key(key, tag), local / tag, include=include)
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
    log.info("resumed from %s%s", store.url(checkpoint_key(key, tag)), how)
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
    return all(bool(torch.isfinite(own_weights(p)).all()) for p in engine.module.parameters())


def own_weights(param: torch.Tensor) -> torch.Tensor:
    """The weights of ``param`` this rank holds. ZeRO-3 keeps only this rank's partition, in ``ds_tensor``; the
    partition of the last rank(s) ends in padding that DeepSpeed allocates with ``torch.empty`` and never writes
    (a 1-element parameter such as the logit scale is all padding on rank 1 of 2). Whatever the reused memory held
    there can be NaN or inf, so it is left out, else a healthy run now and then refuses to save."""
    part = getattr(param, "ds_tensor", None)
    if part is None:
        return param
    start = part.ds_numel * param.ds_zero_partition_rank  # partition size x this rank's place in the ZeRO group
    return part.narrow(0, 0, max(0, min(part.ds_numel, param.ds_numel - start)))


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))
