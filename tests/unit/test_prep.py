"""Prep: embedded sets are written once and shared; external shards are indexed, not copied."""

from __future__ import annotations

from pathlib import Path

from ito_core.config import load_config
from ito_core.data.embedded import shapes_samples
from ito_core.data.shards import write_shards
from ito_core.prep import prepare, shard_urls
from ito_core.storage import LocalStore


def test_external_webdataset_shards_are_indexed_with_counts(tmp_path: Path) -> None:
    write_shards(shapes_samples("train", num_samples=30, image_size=16), tmp_path / "mine", image_size=16,
                 samples_per_shard=10, jpeg_quality=80)
    pattern = str(tmp_path / "mine" / "shard-{000000..000002}.tar")
    cfg = load_config(["data=webdataset", f"data.shards=['{pattern}']", f"storage.root={tmp_path / 'store'}",
                       "eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="])
    store = LocalStore(cfg.storage.root)

    keys = prepare(cfg.data, cfg.eval, store)

    urls, count = shard_urls(store, keys["train"])
    assert count == 30 and [Path(u).name for u in urls] == [f"shard-00000{i}.tar" for i in range(3)]
    assert not list(Path(store.url(keys["train"])).glob("*.tar")), "external shards are referenced, not copied"


def test_embedded_prep_is_shared_and_not_rebuilt(tmp_path: Path) -> None:
    overrides = ["data.sources=[shapes]", "data.shapes_train=40", "data.shapes_eval=10", "eval.zero_shot=",
                 f"storage.root={tmp_path}", "data.samples_per_shard=16"]
    store = LocalStore(tmp_path)
    keys = prepare(load_config(overrides).data, load_config(overrides).eval, store)
    manifest = Path(store.url(keys["train"])) / "manifest.json"
    before = manifest.stat().st_mtime_ns

    again = prepare(load_config([*overrides, "ito.images=4"]).data, load_config(overrides).eval, store)

    assert again == keys and manifest.stat().st_mtime_ns == before
    assert shard_urls(store, keys["train"])[1] == 40 and shard_urls(store, keys["shapes"])[1] == 10
