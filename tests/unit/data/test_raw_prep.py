"""data=raw prep: every input kind, every bad input counted by reason, deterministic, resumable, deduplicated."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.raw_inputs import CORRUPT, bomb_png, image, truncated_jpeg, write_files, write_tar
from PIL import Image

from ito_core.artifacts import train_data_key
from ito_core.config import load_config
from ito_core.data import raw_prep
from ito_core.data.loader import TrainStream, iter_shard_samples
from ito_core.prep import prepare, shard_list, shard_urls
from ito_core.storage import MANIFEST, LocalStore

NO_EVAL = ["eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="]


def _prep(tmp_path: Path, *overrides: str, store: str = "store") -> tuple[dict[str, Any], Path]:
    cfg = load_config(["data=raw", f"storage.root={tmp_path / store}", "data.image_size=24",
                       "data.samples_per_shard=4", "data.prep_workers=1", *NO_EVAL, *overrides])
    local = LocalStore(cfg.storage.root)
    keys = prepare(cfg.data, cfg.eval, local)
    return local.read_json(f"{keys['train']}/{MANIFEST}"), Path(local.url(keys["train"]))


def _counts(manifest: dict[str, Any]) -> dict[str, Any]:
    return {"kept": manifest["stats"]["kept"], "skipped": manifest["stats"]["skipped"]}


def _samples(out_dir: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    urls = [str(out_dir / shard["name"]) for shard in manifest["shards"]]
    return [{"key": s["__key__"], **json.loads(s["json"]), "size": Image.open(io.BytesIO(s["jpg"])).size}
            for s in iter_shard_samples(urls)]


def _bad_folder(root: Path) -> Path:
    """6 good images and one of every bad case, each with a caption sidecar unless said otherwise."""
    files: dict[str, bytes | str] = {}
    for i in range(6):
        name = f"good{i}.{'png' if i == 5 else 'jpg'}"
        files[name] = image(i, (40 + i, 30), fmt="PNG" if i == 5 else "JPEG")
        files[name.rsplit(".", 1)[0] + ".txt"] = f"a photo {i}\n\n  second   caption {i} \n"
    bad = {"corrupt.jpg": CORRUPT, "cut.jpg": truncated_jpeg(), "empty.jpg": b"", "bomb.png": bomb_png(),
           "latin1.jpg": image(20), "blank.jpg": image(21), "nocap.jpg": image(22), "zdup.jpg": files["good0.jpg"],
           "tiny.jpg": image(23, (6, 6)), "wide.jpg": image(24, (120, 12))}
    for name, body in bad.items():
        files[name] = body
        if name != "nocap.jpg":
            files[name.replace(".jpg", ".txt").replace(".png", ".txt")] = "some caption"
    files["latin1.txt"] = "caf\u00e9 au lait".encode("latin-1")
    files["blank.txt"] = " \n\t\n"
    files["orphan.txt"] = "a caption without its image"
    files["notes.md"] = "not a sample"
    return write_files(root, files)


def test_folder_input_counts_every_bad_case(tmp_path: Path) -> None:
    root = _bad_folder(tmp_path / "in")
    manifest, out_dir = _prep(tmp_path, "data.input_kind=folder", f"data.input={root}", "data.min_image_size=8",
                              "data.max_aspect_ratio=4")
    assert _counts(manifest) == {"kept": 6, "skipped": {
        "bad_aspect": 1, "bad_caption_encoding": 1, "corrupt_image": 1, "decompression_bomb": 1, "duplicate": 1,
        "empty_file": 1, "missing_file": 1, "no_caption": 2, "too_small": 1, "truncated_image": 1}}
    assert manifest["stats"]["examples"] == {  # which input each skip was, to go and look
        "bad_aspect": ["wide.jpg"], "bad_caption_encoding": ["latin1.jpg"], "corrupt_image": ["corrupt.jpg"],
        "decompression_bomb": ["bomb.png"], "duplicate": ["zdup.jpg"], "empty_file": ["empty.jpg"],
        "missing_file": ["orphan.txt"], "no_caption": ["blank.jpg", "nocap.jpg"], "too_small": ["tiny.jpg"],
        "truncated_image": ["cut.jpg"]}
    samples = _samples(out_dir, manifest)
    assert sorted(Path(s["source"]).name for s in samples) == [f"good{i}.{'png' if i == 5 else 'jpg'}"
                                                                for i in range(6)]
    assert {s["size"] for s in samples} == {(24, 24)}
    first = next(s for s in samples if s["source"] == "good0.jpg")
    assert first["captions"] == ["a photo 0", "second caption 0"] and first["label"] == -1


def test_table_csv_with_several_caption_columns(tmp_path: Path) -> None:
    root = write_files(tmp_path / "in", {"imgs/a.jpg": image(1), "imgs/b.png": image(2, fmt="PNG"),
                                         "elsewhere/c.jpg": image(3)})
    rows = [b"path,caption,alt_caption",
            b"imgs/a.jpg,a red thing,\"a thing, red\"",
            b"imgs/b.png,a blue thing,",  # one caption only
            f"{tmp_path / 'in' / 'elsewhere' / 'c.jpg'},absolute path,second".encode(),
            b"imgs/gone.jpg,missing image,x",
            b"imgs/a.jpg,caf\xe9,latin-1 bytes",
            b",no image at all,x",
            b"imgs/b.png,,"]  # no caption at all
    (root / "pairs.csv").write_bytes(b"\n".join(rows) + b"\n")
    manifest, out_dir = _prep(tmp_path, "data.input_kind=table", f"data.input={root / 'pairs.csv'}",
                              "data.image_column=path", "data.caption_columns=[caption,alt_caption]")
    assert _counts(manifest) == {"kept": 3, "skipped": {"bad_caption_encoding": 1, "missing_file": 2,
                                                        "no_caption": 1}}
    captions = [s["captions"] for s in _samples(out_dir, manifest)]
    assert captions == [["a red thing", "a thing, red"], ["a blue thing"], ["absolute path", "second"]]


def test_table_parquet_and_tsv(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = write_files(tmp_path / "in", {f"{i}.jpg": image(i) for i in range(5)})
    table = pa.table({"url": [f"{i}.jpg" for i in range(5)], "texts": [["one", "two"], ["x"], [], ["y"], ["z"]],
                      "raw": [b"ok", b"\xff\xfe", b"a", b"b", b"c"]})
    pq.write_table(table, root / "pairs.parquet")
    manifest, out_dir = _prep(tmp_path, "data.input_kind=table", f"data.input={root / 'pairs.parquet'}",
                              "data.image_column=url", "data.caption_columns=[texts,raw]")
    assert _counts(manifest) == {"kept": 4, "skipped": {"bad_caption_encoding": 1}}
    assert _samples(out_dir, manifest)[0]["captions"] == ["one", "two", "ok"]

    (root / "pairs.tsv").write_text("url\tcaption\n0.jpg\ta tab separated row\n")
    manifest, out_dir = _prep(tmp_path, "data.input_kind=table", f"data.input={root / 'pairs.tsv'}",
                              "data.image_column=url", store="tsv")
    assert [s["captions"] for s in _samples(out_dir, manifest)] == [["a tab separated row"]]


def _img2dataset_tar(path: Path, first: int, count: int) -> Path:
    members: list[tuple[str, bytes | str]] = []
    for i in range(first, first + count):
        key = f"{i:09d}"
        members += [(f"{key}.jpg", image(100 + i, (50, 70))), (f"{key}.txt", f"caption {i}"),
                    (f"{key}.json", json.dumps({"key": key, "caption": f"caption {i}", "alt": [f"alt {i}"]}))]
    return write_tar(path, members)


def test_img2dataset_tars(tmp_path: Path) -> None:
    _img2dataset_tar(tmp_path / "in" / "00000.tar", 0, 5)
    broken = _img2dataset_tar(tmp_path / "in" / "00001.tar", 5, 5)
    broken.write_bytes(broken.read_bytes()[:10000])  # breaks off inside a member
    write_tar(tmp_path / "in" / "00002.tar", [("000000100.txt", "a caption whose image is missing"),
                                               ("000000101.jpg", image(7)), ("000000101.json", b"\xff{")])
    manifest, out_dir = _prep(tmp_path, "data.input_kind=img2dataset", f"data.input={tmp_path / 'in'}",
                              "data.caption_columns=[txt,alt]")
    samples = _samples(out_dir, manifest)
    assert manifest["stats"]["skipped"] == {"bad_caption_encoding": 1, "broken_tar": 1, "missing_file": 1}
    assert len(samples) == manifest["num_samples"] and 5 < len(samples) < 10  # the broken tar: what precedes the cut
    assert samples[0]["captions"] == ["caption 0", "alt 0"] and samples[0]["source"].endswith("00000.tar#000000000")
    assert samples[0]["size"] == (24, 24)


@pytest.mark.parametrize("name", ["../escape.jpg", "/abs.jpg"])
def test_img2dataset_tar_with_unsafe_member_is_rejected(tmp_path: Path, name: str) -> None:
    tar = write_tar(tmp_path / "in" / "00000.tar", [("000000000.jpg", image(1)), ("000000000.txt", "ok"),
                                                     (name, image(2))])
    with pytest.raises(ValueError, match="refusing tar member") as err:
        _prep(tmp_path, "data.input_kind=img2dataset", f"data.input={tar}", "data.caption_columns=[txt]")
    assert name in str(err.value) and str(tar) in str(err.value)


def _numbered_folder(root: Path, count: int, duplicates: dict[int, int]) -> Path:
    """``count`` images; image i is a byte copy of image duplicates[i] when i is a key there."""
    files: dict[str, bytes | str] = {}
    for i in range(count):
        files[f"{i:03d}.jpg"] = image(duplicates.get(i, i), (60, 45))
        files[f"{i:03d}.txt"] = f"caption {i}"
    return write_files(root, files)


def test_workers_and_reruns_give_identical_bytes(tmp_path: Path) -> None:
    root = _numbered_folder(tmp_path / "in", 10, {7: 2})
    args = ("data.input_kind=folder", f"data.input={root}", "data.samples_per_shard=3")
    one, one_dir = _prep(tmp_path, *args, "data.prep_workers=1", store="one")
    two, two_dir = _prep(tmp_path, *args, "data.prep_workers=2", store="two")
    assert one == two and _counts(one) == {"kept": 9, "skipped": {"duplicate": 1}}
    assert [s["num_samples"] for s in one["shards"]] == [3, 3, 2, 1]  # shard i = input records [3i, 3i + 3)
    for shard in one["shards"]:
        assert (one_dir / shard["name"]).read_bytes() == (two_dir / shard["name"]).read_bytes()


def test_rerun_after_a_crash_redoes_only_unfinished_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _numbered_folder(tmp_path / "in", 12, {10: 1})  # 4 shards of 3; shard 3 repeats an image of shard 0
    args = ("data.input_kind=folder", f"data.input={root}", "data.samples_per_shard=3")
    reference, _ = _prep(tmp_path, *args, store="reference")
    write_shard = raw_prep.write_shard

    def dies_at_shard_2(task: raw_prep.ShardTask) -> dict[str, Any]:
        if task.index == 2:
            raise RuntimeError("killed")
        return write_shard(task)

    monkeypatch.setattr(raw_prep, "write_shard", dies_at_shard_2)
    with pytest.raises(RuntimeError, match="killed"):
        _prep(tmp_path, *args)
    monkeypatch.setattr(raw_prep, "write_shard", write_shard)
    out_dir = next((tmp_path / "store" / "data").iterdir())
    assert not (out_dir / MANIFEST).exists()
    (out_dir / "shard-000001.tar").write_bytes((out_dir / "shard-000001.tar").read_bytes()[:1000])  # truncated
    kept = {name: (out_dir / name).stat() for name in ("shard-000000.tar", "shard-000000.tar.stats.json")}

    manifest, _ = _prep(tmp_path, *args)

    assert manifest == reference and manifest["stats"]["skipped"] == {"duplicate": 1}
    for name, before in kept.items():  # finished work is not redone
        after = (out_dir / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [MANIFEST] + [f"shard-00000{i}.tar{suffix}" for i in range(4) for suffix in ("", ".stats.json")])


def test_resize_modes_and_no_reencode(tmp_path: Path) -> None:
    already = image(5, (24, 24))  # a JPEG of the target geometry: stored byte for byte
    root = write_files(tmp_path / "in", {"a.jpg": already, "a.txt": "a", "b.jpg": image(6, (90, 30)), "b.txt": "b",
                                         "c.png": image(7, (20, 16), fmt="PNG"), "c.txt": "c"})
    manifest, out_dir = _prep(tmp_path, "data.input_kind=folder", f"data.input={root}", "data.resize_mode=shorter_side")
    raw = {s["__key__"]: s["jpg"] for s in iter_shard_samples([str(out_dir / manifest["shards"][0]["name"])])}
    sizes = [Image.open(io.BytesIO(jpg)).size for jpg in raw.values()]
    assert sizes == [(24, 24), (72, 24), (20, 16)]  # keep aspect; never upscale
    assert next(iter(raw.values())) == already
    square, square_dir = _prep(tmp_path, "data.input_kind=folder", f"data.input={root}", store="square")
    assert {s["size"] for s in _samples(square_dir, square)} == {(24, 24)}


def test_raw_shards_feed_the_training_stream(tmp_path: Path, tokenizer) -> None:
    root = _numbered_folder(tmp_path / "in", 10, {})
    cfg = load_config(["data=raw", "data.input_kind=folder", f"data.input={root}", f"storage.root={tmp_path}",
                       "data.image_size=24", "data.samples_per_shard=4", "data.prep_workers=1", *NO_EVAL])
    store = LocalStore(tmp_path)
    keys = prepare(cfg.data, cfg.eval, store)
    assert keys["train"] == train_data_key(cfg.data) != train_data_key(load_config().data)
    urls, count = shard_urls(store, keys["train"])
    stream = TrainStream(urls, batch_size=5, num_texts=2, tokenizer=tokenizer, seed=0, rank=0, world_size=1,
                         shard_samples=shard_list(store, keys["train"])[1])
    batches = [batch for _, batch in zip(range(2), stream, strict=False)]
    assert batches[0]["images"].shape == (5, 3, 24, 24)
    assert sorted(k for b in batches for k in b["keys"]) == [f"{i:010d}" for i in range(10)]


@pytest.mark.parametrize(("override", "key"), [
    ("data.input_kind=csv", "data.input_kind"),
    ("data.resize_mode=stretch", "data.resize_mode"),
    ("data.max_aspect_ratio=0.5", "data.max_aspect_ratio"),
    ("data.prep_workers=0", "data.prep_workers"),
    ("data.image_column=", "data.image_column"),
])
def test_bad_raw_config_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(["data=raw", "data.input_kind=table", "data.input=/data/t.csv", override])
