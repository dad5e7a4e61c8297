"""Enough training shards for the ranks: each rank reads whole shards (``ito_core.data.order.check_shards``), so a
set with fewer shards than ``cluster.nodes x cluster.tasks_per_node`` fails inside the training job, after the
queue wait. The count is known before: from the prep manifest once committed, from ``data.shards`` for
data=webdataset, and from the known sample counts for embedded data; data=raw is counted by prep (and checked again
before the training job is submitted)."""

from __future__ import annotations

import math

from ito_core.artifacts import committed, read_manifest, train_data_key
from ito_core.config import RunConfig
from ito_core.data.external import external_shards
from ito_core.preflight.finding import Finding, failed, ok, skipped
from ito_core.prep import train_sample_count
from ito_core.storage import ArtifactStore

CHECK = "shards"


def shard_count(cfg: RunConfig, store: ArtifactStore | None) -> tuple[int, int, str] | None:
    """(shards, samples or 0 when unknown, where the count comes from), or None before prep of data=raw."""
    data, key = cfg.data, train_data_key(cfg.data)
    if store is not None and committed(store, key):
        manifest = read_manifest(store, key)
        return len(manifest["shards"]), int(manifest.get("num_samples", 0)), f"prep manifest {store.url(key)}"
    if data.name == "webdataset":
        return len(external_shards(data)), 0, "data.shards"
    if data.name == "embedded":
        samples = train_sample_count(data)
        bound = "at most " if "openclipart" in data.sources else ""  # prep drops blank and held-out look-alikes
        return math.ceil(samples / data.samples_per_shard), samples, (
            f"{bound}{samples} samples at data.samples_per_shard={data.samples_per_shard}")
    return None


def check_shard_count(cfg: RunConfig, store: ArtifactStore | None) -> Finding:
    cluster = cfg.cluster
    ranks = cluster.nodes * cluster.tasks_per_node
    counted = shard_count(cfg, store)
    if counted is None:
        return skipped(CHECK, "data=raw: prep counts the shards; they are checked before the training job is "
                              "submitted")
    shards, samples, source = counted
    if shards >= ranks:
        return ok(CHECK, f"{shards} training shard(s) ({source}) for {ranks} rank(s)")
    fixes = [f"fewer ranks (cluster.nodes={cluster.nodes} x cluster.tasks_per_node={cluster.tasks_per_node})"]
    if cfg.data.name == "webdataset":
        fixes.insert(0, "more shards in data.shards")
    elif samples >= ranks:
        fixes.insert(0, f"data.samples_per_shard <= {samples // ranks}")
    if cfg.data.name == "embedded" and cfg.data.max_train_samples:
        fixes.insert(1, f"a larger data.max_train_samples (now {cfg.data.max_train_samples})")
    return failed(CHECK, f"the training data has {shards} shard(s) ({source}) for {ranks} ranks, and each rank reads "
                         f"whole shards; set {', or '.join(fixes)}")
