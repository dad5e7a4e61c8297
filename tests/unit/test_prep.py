"""Prep: embedded sets are written once and shared; external shards are indexed, not copied."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.drawings import drawing

from ito_core.artifacts import read_manifest
from ito_core.config import load_config
from ito_core.data import openclipart, tuxpaint
from ito_core.data.embedded import embedded_eval_classes, shapes_samples
from ito_core.data.shards import write_shards
from ito_core.data.tuxpaint import TUXPAINT_CLASSNAMES
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
                 "eval.retrieval=shapes", f"storage.root={tmp_path}", "data.samples_per_shard=16"]
    store = LocalStore(tmp_path)
    keys = prepare(load_config(overrides).data, load_config(overrides).eval, store)
    manifest = Path(store.url(keys["train"])) / "manifest.json"
    before = manifest.stat().st_mtime_ns

    again = prepare(load_config([*overrides, "ito.images=4"]).data, load_config(overrides).eval, store)

    assert again == keys and manifest.stat().st_mtime_ns == before
    assert shard_urls(store, keys["train"])[1] == 40 and shard_urls(store, keys["shapes"])[1] == 10


def test_embedded_prep_drops_training_near_duplicates_of_the_eval_stamps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stamps, clipart = tmp_path / "stamps", tmp_path / "png"
    for root, rel, kind, size, text in [
        (stamps, "town/houses/home.png", "house", (120, 80), "A red house."),
        (stamps, "animals/birds/duck.png", "ball", (60, 60), "A duck."),
        (stamps, "symbols/a.png", "flag", (60, 60), "The letter A."),
        (clipart, "buildings/homes/house_ganson.png", "house", (360, 240), None),  # the stamp, larger
        (clipart, "plants/flowers/rose.png", "flag", (90, 30), None),
    ]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        drawing(kind, size=size).save(root / rel)
        if text:
            (root / rel).with_suffix(".txt").write_text(text)
    monkeypatch.setattr(tuxpaint, "TUXPAINT_DIR", stamps)
    monkeypatch.setattr(openclipart, "OPENCLIPART_DIR", clipart)
    cfg = load_config(["data.sources=[shapes,openclipart]", "data.shapes_train=4", "data.shapes_eval=6",
                       "eval.zero_shot=[tuxpaint,shapes_heldout]", "eval.retrieval=[tuxpaint]", "eval.linear_probe=",
                       "eval.modality_gap=", f"storage.root={tmp_path / 'store'}"])
    store = LocalStore(cfg.storage.root)

    keys = prepare(cfg.data, cfg.eval, store)

    train = read_manifest(store, keys["train"])
    assert train["sources"] == {"shapes": 4, "openclipart": 1}
    assert train["dedupe"] == {"against": "tuxpaint", "reference_images": 3, "dropped": {"near_duplicate_of_eval": 1}}
    tux = read_manifest(store, keys["tuxpaint"])
    assert tux["num_samples"] == 3 and tux["classnames"] == TUXPAINT_CLASSNAMES and tux["left_out"] == {}
    heldout = read_manifest(store, keys["shapes_heldout"])
    assert heldout["num_samples"] == 6 and heldout["classnames"] == embedded_eval_classes("shapes_heldout")
