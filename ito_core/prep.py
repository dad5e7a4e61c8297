"""The prep stage: embedded data sets and user eval sets -> webdataset shards committed to the artifact store.

Artifacts are keyed by a hash of the config that shapes their bytes (``ito_core.artifacts``), so every grid
point with the same data config shares them, and a committed artifact is never rebuilt.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ito_core.artifacts import committed, prep_keys, read_manifest
from ito_core.config import DataConfig, EvalConfig
from ito_core.data.embedded import (
    Sample,
    embedded_eval_classes,
    fashion_mnist_samples,
    fashion_mnist_size,
    shapes_samples,
)
from ito_core.data.eval_sets import EvalSource, check_eval_tasks, read_eval_source
from ito_core.data.external import index_external
from ito_core.data.raw_prep import prepare_raw
from ito_core.data.shards import write_shards
from ito_core.storage import ArtifactStore, commit, disk_full_error

log = logging.getLogger(__name__)

def _interleave(streams: list[Iterator[Sample]]) -> Iterator[Sample]:
    """Round-robin over sources so every shard mixes them."""
    sentinel = object()
    for group in itertools.zip_longest(*streams, fillvalue=sentinel):
        yield from (s for s in group if s is not sentinel)


def _train_samples(data: DataConfig) -> Iterator[Sample]:
    limit = data.max_train_samples
    streams = {
        "fashion_mnist": lambda: fashion_mnist_samples("train", limit=limit),
        "shapes": lambda: shapes_samples("train", num_samples=min(data.shapes_train, limit or data.shapes_train),
                                         image_size=data.image_size),
    }
    return _interleave([streams[src]() for src in data.sources])


def train_sample_count(data: DataConfig) -> int:
    """How many samples ``_train_samples`` yields for embedded data, known without reading any."""
    limit = data.max_train_samples
    counts = {"fashion_mnist": lambda: fashion_mnist_size("train"), "shapes": lambda: data.shapes_train}
    return sum(min(limit, count) if limit > 0 else count for count in (counts[src]() for src in data.sources))


def _eval_source(name: str, data: DataConfig, eval_cfg: EvalConfig) -> EvalSource:
    if name in eval_cfg.datasets:
        source = read_eval_source(name, eval_cfg.datasets[name], max_samples=eval_cfg.max_samples)
    elif name == "fashion_mnist":
        source = EvalSource(embedded_eval_classes(name), True,
                            fashion_mnist_samples("test", limit=eval_cfg.max_samples))
    elif name == "shapes":
        source = EvalSource(embedded_eval_classes(name), True, shapes_samples(
            "eval", num_samples=min(data.shapes_eval, eval_cfg.max_samples), image_size=data.image_size))
    else:
        raise ValueError(f"eval set {name!r} is neither embedded (fashion_mnist, shapes) nor a key of eval.datasets; "
                         f"add +eval.datasets.{name}=<layout>:<path>")
    # Before any image is read: a task the set cannot serve must fail here, not after training.
    check_eval_tasks(name, classnames=source.classnames, captioned=source.captioned, eval_cfg=eval_cfg)
    return source


def _write(store: ArtifactStore, key: str, samples: Iterable[Sample], data: DataConfig,
           meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write and commit shards; ``meta`` adds fields to the manifest (an eval set's class names)."""
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
        _write(store, keys["train"], _train_samples(data), data)
    for name, key in keys.items():
        if name != "train" and not committed(store, key):  # reading a user set's listing or index is not free
            source = _eval_source(name, data, eval_cfg)
            _write(store, key, source.samples, data, source.manifest_fields())
    return keys


def shard_urls(store: ArtifactStore, key: str) -> tuple[list[str], int]:
    """URLs (local paths or s3://, both streamed by the loader) and total sample count of a shard set."""
    manifest = read_manifest(store, key)
    urls = [shard.get("url") or store.url(f"{key}/{shard['name']}") for shard in manifest["shards"]]
    return urls, manifest["num_samples"]


def shard_list(store: ArtifactStore, key: str) -> tuple[list[str], list[int]]:
    """URLs of a shard set and each shard's sample count (the training order is built from them)."""
    urls, _ = shard_urls(store, key)
    return urls, [shard["num_samples"] for shard in read_manifest(store, key)["shards"]]
