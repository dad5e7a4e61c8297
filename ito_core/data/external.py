"""``data=webdataset``: the user's own shards are not rewritten, only indexed (a manifest of their URLs and sample
counts, which the training order needs)."""

from __future__ import annotations

import logging

from braceexpand import braceexpand

from ito_core.config import DataConfig
from ito_core.data.shard_io import iter_shard_samples
from ito_core.storage import ArtifactStore, commit

log = logging.getLogger(__name__)


def external_shards(data: DataConfig) -> list[str]:
    """The user's own shard URLs (``data=webdataset``), brace patterns expanded."""
    return [url for pattern in data.shards for url in braceexpand(pattern)]


def count_samples(url: str) -> int:
    return sum(1 for _ in iter_shard_samples([url]))


def index_external(store: ArtifactStore, key: str, data: DataConfig, *, counts: dict[str, int] | None = None) -> None:
    """Commit a manifest that points at the user's own shards (``data=webdataset``), with their counts (read
    here unless ``counts`` has them: a job array counted them)."""
    counts = counts or {}
    shards = [{"name": url.rsplit("/", 1)[-1], "url": url,
               "num_samples": counts[url] if url in counts else count_samples(url)} for url in external_shards(data)]
    commit(store, key, {"shards": shards, "num_samples": sum(s["num_samples"] for s in shards),
                        "stats": {"kept": sum(s["num_samples"] for s in shards), "skipped": {}}})
    log.info("prep: indexed %d external shards for %s", len(shards), store.url(key))
