"""``data=raw``: your images + captions -> validated, resized shards + manifest, in parallel and resumable.

Plan: shard i holds input records [i * S, (i + 1) * S) (S = ``data.samples_per_shard``) *before*
filtering, so shard boundaries never depend on what is skipped and a rerun knows which shards exist.

This process streams the input once, in its fixed order. Per record it fetches the image (a thread pool
for paths / s3:// URLs), checks the captions (UTF-8, clean-up as ``write_shards``) and removes exact
duplicates: a 64-bit hash of the image bytes, first occurrence in input order wins, across all shards
(the one structure that grows with the input: ~80 bytes per image, ~1 GB for CC12M). Admitted samples
of a shard go to a spill file on local disk; a pool of ``data.prep_workers`` processes turns each
spill into a shard (decode check, size limits, resize, JPEG; ``shard_writer.write_shard``) with a
stats sidecar. At most workers + 1 shards are in flight, so memory is bounded whatever the input size;
local disk holds their spill files (up to (workers + 1) x samples_per_shard input images, in $TMPDIR).

A rerun skips finished shards (tar + sidecar present; locally also the tar's size checked) without
fetching their images: their sidecars give back the hashes they admitted. Output bytes depend only on
input and config, never on the worker count. The manifest (shards, counts, sha256, config hash, stats)
is committed last. S3 output: shards are written to a local staging folder and uploaded by a thread
pool as they finish (the store retries transient failures).

Skip reasons counted here: ``missing_file``, ``empty_file``, ``bad_caption_encoding``, ``no_caption``,
``duplicate``, plus the readers' (``broken_tar``, ``bad_metadata``); the workers add ``transcode``'s.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ito_core.artifacts import committed, member_key, raw_prep_config, read_manifest
from ito_core.config import DataConfig, config_hash
from ito_core.data.files import read_bytes
from ito_core.data.prep_parts import TaskShards, task_shards
from ito_core.data.shard_writer import (
    RECORDS_SUFFIX,
    SIDECAR_SUFFIX,
    ShardTask,
    add_example,
    shard_name,
    spill_sample,
    write_shard,
)
from ito_core.data.shards import MANIFEST_VERSION, clean_captions
from ito_core.data.sources import RawRecord, read_records, record_counts
from ito_core.data.transcode import TranscodeOptions
from ito_core.storage import ArtifactStore, commit

log = logging.getLogger(__name__)

FETCH_THREADS = 16  # image reads in flight (S3 GETs are latency-bound)


def prepare_raw(data: DataConfig, store: ArtifactStore, key: str) -> dict[str, Any]:
    """Write (or finish, or reuse) the shards of ``data.input`` under ``key``; return the manifest."""
    if committed(store, key):
        log.info("prep: %s already committed, reusing it", store.url(key))
        return read_manifest(store, key)
    sidecars, _, _ = write_raw_shards(data, store, key)
    manifest = raw_manifest(sidecars, data)
    if not manifest["num_samples"]:
        raise ValueError(f"prep kept no sample of data.input={data.input!r}: all were skipped "
                         f"({manifest['stats']['skipped']}); check data.input_kind and the size limits")
    commit(store, key, manifest)
    log.info("prep: committed %d samples in %d shards to %s; skipped %s (examples in the manifest's stats)",
             manifest["num_samples"], len(manifest["shards"]), store.url(key), manifest["stats"]["skipped"])
    return manifest


def write_raw_shards(data: DataConfig, store: ArtifactStore, key: str, *,
                     part: tuple[int, int] | None = None) -> tuple[list[dict[str, Any]], int, int]:
    """Write the shards still missing (all, or task ``t`` of ``T``'s with ``part=(t, T)``); return the sidecars
    (of the shards written now and of those a previous run finished), how many shards the input makes in all,
    and how many of the sidecars a previous run had finished."""
    options = TranscodeOptions(image_size=data.image_size, resize_mode=data.resize_mode,
                               jpeg_quality=data.jpeg_quality, min_size=data.min_image_size,
                               max_aspect=data.max_aspect_ratio, max_pixels=data.max_pixels)
    in_flight = data.prep_workers + 1  # every worker busy, one shard queued for the next free one
    counts = record_counts(data) if part is not None and part[1] > 1 else None  # one task reads it all
    mine = None if part is None else task_shards(*part, num_records=None if counts is None else sum(counts),
                                                 samples_per_shard=data.samples_per_shard)
    first, stop = (0, None) if mine is None else mine.shard_span()
    with tempfile.TemporaryDirectory(prefix="ito-prep-") as tmp, _executor(data.prep_workers) as pool, \
            ThreadPoolExecutor(FETCH_THREADS) as fetchers, ThreadPoolExecutor(in_flight) as uploaders:
        run = _Run(store, key, Path(tmp), options, pool=pool, fetchers=fetchers, uploaders=uploaders,
                   max_in_flight=in_flight, part=mine)
        records = read_records(data, start=first * data.samples_per_shard, counts=counts)
        sidecars = run.all_shards(records, data.samples_per_shard, shards=(first, stop))
        num_shards = run.num_shards if counts is None else -(-sum(counts) // data.samples_per_shard)
        return sidecars, num_shards, run.num_reused


class _Run:
    """One pass over the input: admit records, hand shards to the pool, collect their sidecars.

    ``part``: only one prep array task's shards (``prep_parts.py``, ``prep_array.py``): the others' records
    are listed but never fetched, or not read at all, and every shard also gets a record log for the final step."""

    def __init__(self, store: ArtifactStore, key: str, tmp: Path, options: TranscodeOptions, *, pool: Executor,
                 fetchers: Executor, uploaders: Executor, max_in_flight: int,
                 part: TaskShards | None = None) -> None:
        self.store, self.key, self.options, self.part = store, key, options, part
        self.pool, self.fetchers, self.uploaders = pool, fetchers, uploaders
        self.local = store.local_dir(key)  # None: stage locally, then upload
        self.staging, self.spills = tmp / "staging", tmp / "spill"
        self.spills.mkdir()
        self.max_in_flight = max_in_flight
        self.seen: set[int] = set()  # hashes of admitted images: the duplicate index
        self.sidecars: dict[int, dict[str, Any]] = {}
        self.in_flight: set[Future] = set()  # one per shard: its write (local) or its upload (S3)
        self.num_shards = self.num_reused = 0

    def all_shards(self, records: Iterator[RawRecord], samples_per_shard: int, *,
                   shards: tuple[int, int | None] = (0, None)) -> list[dict[str, Any]]:
        """The shards ``[first, stop)`` (stop None: to the input's end); ``records`` starts at the first's."""
        with tqdm(unit="img", desc="prep", disable=None) as bar:
            for index, chunk in _chunks(records, samples_per_shard, *shards):
                self.num_shards = index + 1
                if self.part is not None and not self.part.owns(index):
                    bar.update(sum(1 for _ in chunk))  # another task's shard
                    continue
                finished = self._finished(index)
                if finished is not None:
                    bar.update(sum(1 for _ in chunk))  # not fetched: the sidecar has what dedup needs
                    self.seen.update(finished["hashes"])
                    self.sidecars[index] = finished
                    self.num_reused += 1
                    continue
                task = self._spill(index, chunk, bar, first_key=index * samples_per_shard)
                written = self.pool.submit(write_shard, task)
                self.in_flight.add(written if self.local is not None else self.uploaders.submit(self._upload, written))
                while len(self.in_flight) >= self.max_in_flight:
                    self._collect(FIRST_COMPLETED)
            self._collect(ALL_COMPLETED)
        return [self.sidecars[i] for i in sorted(self.sidecars)]

    def _finished(self, index: int) -> dict[str, Any] | None:
        """The sidecar of a shard a previous run completed, else None."""
        name = shard_name(index)
        sidecar_key = member_key(self.key, name + SIDECAR_SUFFIX)
        if not self.store.exists(sidecar_key) or (
                self.part is not None and not self.store.exists(member_key(self.key, name + RECORDS_SUFFIX))):
            return None
        sidecar = self.store.read_json(sidecar_key)
        if not sidecar["num_samples"]:
            return sidecar
        if self.local is not None:  # a local tar can be truncated; an S3 object is all or nothing
            tar = self.local / name
            return sidecar if tar.is_file() and tar.stat().st_size == sidecar["size"] else None
        return sidecar if self.store.exists(member_key(self.key, name)) else None

    def _spill(self, index: int, chunk: Iterable[RawRecord], bar: tqdm, *, first_key: int) -> ShardTask:
        """Admit the chunk's records into a spill file; count what is skipped here."""
        skipped: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        hashes: list[int] = []
        records: list[list[Any]] | None = [] if self.part is not None else None
        spill = self.spills / f"{index:06d}.spill"
        with open(spill, "wb") as f:
            for offset, (record, image, captions, reason) in enumerate(_fetched(chunk, self.fetchers)):
                bar.update()
                digest = 0 if reason else int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "little")
                if not reason and digest in self.seen:
                    reason = "duplicate"
                if records is not None:  # [key, image hash, skip reason, admitted, source]
                    records.append([f"{first_key + offset:010d}", digest, reason, int(not reason), record.source])
                if reason:
                    skipped[reason] += 1
                    add_example(examples, reason, record.source)
                    continue
                self.seen.add(digest)
                hashes.append(digest)
                spill_sample(f, f"{first_key + offset:010d}", image, captions, record.source)
        out_dir = self.local if self.local is not None else self.staging / shard_name(index)
        return ShardTask(index=index, spill=str(spill), out_dir=str(out_dir), options=self.options,
                         skipped=dict(skipped), examples=examples, hashes=hashes, records=records)

    def _collect(self, return_when: str) -> None:
        done, self.in_flight = wait(self.in_flight, return_when=return_when)
        for future in done:
            sidecar = future.result()  # a worker's or an upload's exception stops prep here
            self.sidecars[int(sidecar["name"].removeprefix("shard-").removesuffix(".tar"))] = sidecar

    def _upload(self, written: Future) -> dict[str, Any]:
        """S3 output: upload a shard once its worker is done (tar + sidecar: done once both exist)."""
        sidecar = written.result()
        folder = self.staging / sidecar["name"]
        self.store.upload_dir(folder, self.key)
        shutil.rmtree(folder)
        return sidecar


def _chunks(records: Iterator[RawRecord], size: int, first: int,
            stop: int | None) -> Iterator[tuple[int, Iterator[RawRecord]]]:
    """(shard index, its records) lazily from shard ``first`` up to ``stop``: each chunk must be used up before
    the next is asked for. Nothing past ``stop``'s first record is read."""
    for index in itertools.count(first) if stop is None else range(first, stop):
        first = next(records, None)
        if first is None:
            return
        yield index, itertools.chain([first], itertools.islice(records, size - 1))


def _fetched(records: Iterable[RawRecord], fetchers: Executor) -> Iterator[tuple[RawRecord, bytes, list[str], str]]:
    """(record, image bytes, clean captions, skip reason or "") in input order, reading ahead in threads."""
    window: deque[Future] = deque()
    for record in records:
        window.append(fetchers.submit(_load, record))
        if len(window) > FETCH_THREADS:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def _load(record: RawRecord) -> tuple[RawRecord, bytes, list[str], str]:
    """Fetch what ``record`` points at and check everything that needs no decoding."""
    if record.skip:
        return record, b"", [], record.skip
    raw_captions: list[Any] = list(record.captions)
    if record.caption_url:
        blob = read_bytes(record.caption_url, missing_ok=True) or b""
        raw_captions += blob.split(b"\n")  # decoded (and checked) below with the others
    captions = []
    for caption in raw_captions:
        try:
            captions.append(caption.decode("utf-8") if isinstance(caption, bytes) else caption)
        except UnicodeDecodeError:
            return record, b"", [], "bad_caption_encoding"
    image = record.image if record.image is not None else read_bytes(record.image_url, missing_ok=True)
    if image is None:
        return record, b"", [], "missing_file"
    if not image:
        return record, b"", [], "empty_file"
    captions = clean_captions(captions)
    return record, image, captions, "" if captions else "no_caption"


def raw_manifest(sidecars: list[dict[str, Any]], data: DataConfig) -> dict[str, Any]:
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for sidecar in sidecars:
        skipped.update(sidecar["skipped"])
        for reason, sources in sidecar["examples"].items():
            for source in sources:
                add_example(examples, reason, source)
    shards = [{"name": s["name"], "num_samples": s["num_samples"], "sha256": s["sha256"]}
              for s in sidecars if s["num_samples"]]
    kept = sum(s["num_samples"] for s in shards)
    config = raw_prep_config(data)
    return {"version": MANIFEST_VERSION, "image_size": data.image_size, "jpeg_quality": data.jpeg_quality,
            "resize_mode": data.resize_mode, "config": config, "config_hash": config_hash(config),
            "shards": shards, "num_samples": kept,
            "stats": {"kept": kept, "skipped": dict(sorted(skipped.items())), "examples": examples}}


class _InlineExecutor(Executor):
    """``data.prep_workers=1``: run each task at once in this process (same code path, no spawn)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # delivered through the future, as a pool would
            future.set_exception(err)
        return future


def _executor(workers: int) -> Executor:
    if workers <= 1:
        return _InlineExecutor()
    # spawn, not fork: this process runs fetch/upload threads, and forking beside threads can deadlock.
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
