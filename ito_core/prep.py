"""The prep stage: embedded data sets and user eval sets -> webdataset shards committed to the artifact store.

Artifacts are keyed by a hash of the config that shapes their bytes (``ito_core.artifacts``), so every grid
point with the same data config shares them, and a committed artifact is never rebuilt.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from ito_core.artifacts import committed, member_key, prep_keys, read_manifest
from ito_core.config import EMBEDDED_EVAL_SETS, DataConfig, EvalConfig
from ito_core.data.clipart import NearDuplicateIndex
from ito_core.data.embedded import (
    Sample,
    embedded_eval_classes,
    fashion_mnist_samples,
    fashion_mnist_size,
    shapes_samples,
)
from ito_core.data.eval_sets import EvalSource, check_eval_tasks, read_eval_source, spread_indices
from ito_core.data.external import index_external
from ito_core.data.openclipart import openclipart_files, openclipart_samples
from ito_core.data.raw_prep import prepare_raw
from ito_core.data.shards import write_shards
from ito_core.data.tuxpaint import TUXPAINT_CLASSNAMES, stamp_drawings, tuxpaint_samples, tuxpaint_stamps
from ito_core.storage import ArtifactStore, commit, disk_full_error

log = logging.getLogger(__name__)

def _interleave(streams: list[Iterator[Sample]]) -> Iterator[Sample]:
    """Round-robin over sources so every shard mixes them."""
    sentinel = object()
    for group in itertools.zip_longest(*streams, fillvalue=sentinel):
        yield from (s for s in group if s is not sentinel)


def _counted(samples: Iterator[Sample], counts: Counter[str], source: str) -> Iterator[Sample]:
    for sample in samples:
        counts[source] += 1
        yield sample


def _openclipart_train(limit: int, meta: dict[str, Any]) -> Iterator[Sample]:
    """Open Clip Art drawings without the near-duplicates of any Tux Paint stamp (the held-out eval set), which
    are dropped whether or not tuxpaint is evaluated: the training data must not depend on eval settings."""
    stamps = tuxpaint_stamps()
    held_out = NearDuplicateIndex(stamp_drawings(stamps))
    dropped: Counter[str] = Counter()
    meta["dedupe"] = {"against": "tuxpaint", "reference_images": len(stamps), "dropped": dropped}
    files = openclipart_files()  # in path order, so category by category: a cap keeps an even spread
    yield from openclipart_samples([files[i] for i in spread_indices(len(files), limit)], held_out=held_out,
                                   counts=dropped)


def _train_samples(data: DataConfig, meta: dict[str, Any]) -> Iterator[Sample]:
    """The embedded sources interleaved; ``meta`` gets the samples read per source (and openclipart's dedupe
    counts) while they are read."""
    limit = data.max_train_samples
    streams: dict[str, Callable[[], Iterator[Sample]]] = {
        "fashion_mnist": lambda: fashion_mnist_samples("train", limit=limit),
        "shapes": lambda: shapes_samples("train", num_samples=min(data.shapes_train, limit or data.shapes_train),
                                         image_size=data.image_size),
        "openclipart": lambda: _openclipart_train(limit, meta),
    }
    per_source: Counter[str] = Counter()
    meta["sources"] = per_source
    return _interleave([_counted(streams[src](), per_source, src) for src in data.sources])


def train_sample_count(data: DataConfig) -> int:
    """How many samples ``_train_samples`` yields for embedded data, known without reading any image: at most
    that many, as Open Clip Art's near-duplicates of the held-out stamps (a few dozen) are found while reading."""
    limit = data.max_train_samples
    counts = {"fashion_mnist": lambda: fashion_mnist_size("train"), "shapes": lambda: data.shapes_train,
              "openclipart": lambda: len(openclipart_files())}
    return sum(min(limit, count) if limit > 0 else count for count in (counts[src]() for src in data.sources))


def _embedded_eval_source(name: str, data: DataConfig, eval_cfg: EvalConfig) -> tuple[EvalSource, dict[str, Any]]:
    """An embedded eval set and what its manifest records beyond class names (stamps left out)."""
    max_samples, shapes = eval_cfg.max_samples, min(data.shapes_eval, eval_cfg.max_samples or data.shapes_eval)
    if name == "fashion_mnist":
        return EvalSource(embedded_eval_classes(name), True, fashion_mnist_samples("test", limit=max_samples)), {}
    if name in ("shapes", "shapes_heldout"):
        split = "eval" if name == "shapes" else "heldout"
        samples = shapes_samples(split, num_samples=shapes, image_size=data.image_size)
        return EvalSource(embedded_eval_classes(name), True, samples), {}
    assert name == "tuxpaint", name  # validation admits only EMBEDDED_EVAL_SETS
    left_out: Counter[str] = Counter()
    stamps = tuxpaint_stamps(skipped=left_out)
    stamps = [stamps[i] for i in spread_indices(len(stamps), max_samples)]
    return EvalSource(TUXPAINT_CLASSNAMES, True, tuxpaint_samples(stamps)), {"left_out": dict(left_out)}


def _eval_source(name: str, data: DataConfig, eval_cfg: EvalConfig) -> tuple[EvalSource, dict[str, Any]]:
    if name in eval_cfg.datasets:
        source, meta = read_eval_source(name, eval_cfg.datasets[name], max_samples=eval_cfg.max_samples), {}
    elif name in EMBEDDED_EVAL_SETS:
        source, meta = _embedded_eval_source(name, data, eval_cfg)
    else:
        raise ValueError(f"eval set {name!r} is neither embedded {list(EMBEDDED_EVAL_SETS)} nor a key of "
                         f"eval.datasets; add +eval.datasets.{name}=<layout>:<path>")
    # Before any image is read: a task the set cannot serve must fail here, not after training.
    check_eval_tasks(name, classnames=source.classnames, captioned=source.captioned, eval_cfg=eval_cfg)
    return source, {**source.manifest_fields(), **meta}


def _write(store: ArtifactStore, key: str, samples: Iterable[Sample], data: DataConfig,
           meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write and commit shards; ``meta`` adds fields to the manifest (an eval set's class names, the counts a
    sample stream fills in while it is read)."""
    local = store.local_dir(key)
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = local or Path(tmp)
        try:
            manifest = write_shards(samples, out_dir, image_size=data.image_size,
                                    samples_per_shard=data.samples_per_shard, jpeg_quality=data.jpeg_quality)
        except OSError as err:
            where = "storage.root" if local else "TMPDIR (prep stages shards for S3 there)"
            full = disk_full_error(err, out_dir, what=f"the shards of {store.url(key)}", fix=(
                f"Nothing was committed and the partial shards were deleted. Free space, or point {where} at a "
                "larger disk; then run prep again."))
            if full is None:
                raise
            store.delete_dir(key)  # uncommitted: give back the space the partial shards took
            raise full from err
        manifest.update(meta or {})
        store.upload_dir(out_dir, key)
    commit(store, key, manifest)
    log.info("prep: committed %d samples in %d shards to %s (skipped: %s)", manifest["num_samples"],
             len(manifest["shards"]), store.url(key), manifest["stats"]["skipped"])
    return manifest


def prepare(data: DataConfig, eval_cfg: EvalConfig, store: ArtifactStore) -> dict[str, str]:
    """Write (or reuse) the train shards and the eval sets; return their store keys."""
    keys = prep_keys(data, eval_cfg)
    if committed(store, keys["train"]):  # checked first: building a sample stream reads the source files
        log.info("prep: %s already committed, reusing it", store.url(keys["train"]))
    elif data.name == "webdataset":
        index_external(store, keys["train"], data)
    elif data.name == "raw":
        prepare_raw(data, store, keys["train"])
    else:
        meta: dict[str, Any] = {}
        _write(store, keys["train"], _train_samples(data, meta), data, meta)
        log.info("prep: train samples read per source %s; %s", dict(meta["sources"]), meta.get("dedupe", "no dedupe"))
    for name, key in keys.items():
        if name != "train" and not committed(store, key):  # reading a user set's listing or index is not free
            source, fields = _eval_source(name, data, eval_cfg)
            _write(store, key, source.samples, data, fields)
    return keys


def shard_urls(store: ArtifactStore, key: str) -> tuple[list[str], int]:
    """URLs (local paths or s3://, both streamed by the loader) and total sample count of a shard set."""
    manifest = read_manifest(store, key)
    urls = [shard.get("url") or store.url(member_key(key, shard["name"])) for shard in manifest["shards"]]
    return urls, manifest["num_samples"]


def shard_list(store: ArtifactStore, key: str) -> tuple[list[str], list[int]]:
    """URLs of a shard set and each shard's sample count (the training order is built from them)."""
    urls, _ = shard_urls(store, key)
    return urls, [shard["num_samples"] for shard in read_manifest(store, key)["shards"]]
