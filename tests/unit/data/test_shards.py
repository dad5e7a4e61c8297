from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from ito_core.data.embedded import Sample, shapes_samples
from ito_core.data.loader import iter_shard_samples
from ito_core.data.shards import read_manifest, shard_paths, write_shards
from ito_core.storage import MANIFEST


def _truncated_jpeg() -> Image.Image:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buffer, format="JPEG")
    data = buffer.getvalue()
    return Image.open(io.BytesIO(data[: len(data) // 2]))  # header intact: fails only when loaded


def _with_bad_samples() -> Iterator[Sample]:
    good = list(shapes_samples("train", num_samples=12, image_size=24))
    yield from good[:5]
    yield Sample(key="broken-jpeg", image=_truncated_jpeg(), captions=["a red square"])
    yield Sample(key="no-text", image=good[0].image, captions=["  ", "\x00\x07\u200b", ""])
    yield Sample(key="no-captions", image=good[0].image, captions=[])
    yield Sample(key=good[1].key, image=good[1].image, captions=["a duplicate key"])
    yield Sample(key="has.dot", image=good[0].image, captions=["webdataset would split this key"])
    yield Sample(key="not-an-image", image=None, captions=["x"])  # type: ignore[arg-type]
    yield from good[5:]


def _write(out_dir: Path, samples, **kw) -> dict:
    return write_shards(samples, out_dir, image_size=16, samples_per_shard=5, jpeg_quality=90, **kw)


def test_manifest_counts_shards_and_skipped_samples(tmp_path: Path) -> None:
    manifest = _write(tmp_path, _with_bad_samples())
    assert manifest == read_manifest(tmp_path)
    assert manifest["num_samples"] == 12
    assert manifest["stats"] == {
        "kept": 12,
        "skipped": {"bad_image": 2, "bad_key": 1, "duplicate_key": 1, "no_caption": 2},
    }
    names = ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert [(s["name"], s["num_samples"]) for s in manifest["shards"]] == list(zip(names, [5, 5, 2], strict=True))
    samples = list(iter_shard_samples(shard_paths(tmp_path)))
    assert len(samples) == 12 and len({s["__key__"] for s in samples}) == 12
    meta = json.loads(samples[0]["json"])
    assert set(meta) == {"captions", "label"} and len(meta["captions"]) == 3
    assert Image.open(io.BytesIO(samples[0]["jpg"])).size == (16, 16)


def test_captions_are_cleaned(tmp_path: Path) -> None:
    image = Image.new("RGB", (16, 16))
    captions = ["  a  red\tsquare\n", "a red square", "a\x00 blue\u200b circle", 7, ""]
    _write(tmp_path, [Sample(key="k", image=image, captions=captions)])  # type: ignore[list-item]
    (sample,) = iter_shard_samples(shard_paths(tmp_path))
    assert json.loads(sample["json"])["captions"] == ["a red square", "a blue circle"]


def test_same_input_gives_identical_bytes(tmp_path: Path) -> None:
    def write(out_dir: Path) -> dict:
        samples = shapes_samples("eval", num_samples=30, image_size=32)
        return write_shards(samples, out_dir, image_size=24, samples_per_shard=8, jpeg_quality=85)

    first, second = write(tmp_path / "a"), write(tmp_path / "b")
    assert first == second
    for shard in first["shards"]:
        assert (tmp_path / "a" / shard["name"]).read_bytes() == (tmp_path / "b" / shard["name"]).read_bytes()
    with tarfile.open(tmp_path / "a" / first["shards"][0]["name"]) as tar:
        members = tar.getmembers()
        assert {m.mtime for m in members} == {946684800}
        assert not any(m.pax_headers for m in members)  # plain ustar headers: cheaper to read


def test_resize_shorter_side_then_centre_crop(tmp_path: Path) -> None:
    wide = Image.new("RGB", (90, 30), (0, 0, 255))
    wide.paste((255, 0, 0), (30, 0, 60, 30))  # red centre third, blue sides
    _write(tmp_path, [Sample(key="wide", image=wide, captions=["a red bar"])])
    (sample,) = iter_shard_samples(shard_paths(tmp_path))
    image = Image.open(io.BytesIO(sample["jpg"]))
    assert image.size == (16, 16) and image.mode == "RGB"
    red, green, blue = image.getpixel((8, 8))
    assert red > 200 and green < 60 and blue < 60


def test_manifest_is_written_last(tmp_path: Path) -> None:
    _write(tmp_path, shapes_samples("train", num_samples=3, image_size=16))

    def dies_midway() -> Iterator[Sample]:
        yield from shapes_samples("train", num_samples=7, image_size=16)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        _write(tmp_path, dies_midway())
    assert not (tmp_path / MANIFEST).exists()  # the old manifest must not vouch for new tars
    with pytest.raises(FileNotFoundError, match="prep not complete"):
        read_manifest(tmp_path)


def test_all_samples_skipped_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no_caption"):
        _write(tmp_path, [Sample(key="k", image=Image.new("RGB", (8, 8)), captions=[" "])])
    assert not list(tmp_path.iterdir())


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jpeg_quality"):
        write_shards([], tmp_path, image_size=16, samples_per_shard=5, jpeg_quality=0)
    with pytest.raises(ValueError, match="prefix"):
        _write(tmp_path, [], prefix="a/b")
