"""Prep array tasks on img2dataset tars (ito_core/data/prep_parts.py, sources/img2dataset.py): each task gets a
contiguous block of the shards and reads only the tars that hold it, after counting every tar's records from
its headers; the committed shards and manifest still equal a one-process prep's for any number of tasks."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest
from fixtures.raw_inputs import image, write_tar
from unit.data.test_prep_array import NO_EVAL

from ito_core.artifacts import train_data_key
from ito_core.config import RunConfig, load_config
from ito_core.data.prep_parts import task_shards
from ito_core.data.sources import img2dataset
from ito_core.prep import prepare
from ito_core.prep_array import finish_array, prep_task
from ito_core.storage import MANIFEST, LocalStore

# 5 tars of 4 samples, shards of 3 (so shards straddle tars); sample j is a byte copy of sample COPIES[j], the
# copies in another tar and, with 2 or 3 tasks, in another task's block. Tar 3 breaks off inside its 3rd sample.
COPIES = {9: 1, 17: 2, 18: 13}
TARS, PER_TAR, BROKEN = 5, 4, 3


@pytest.mark.parametrize(("num_shards", "num_tasks"), [(7, 1), (7, 2), (7, 3), (2, 4), (0, 2), (12, 4)])
def test_blocks_cover_every_shard_once_and_differ_by_at_most_one(num_shards: int, num_tasks: int) -> None:
    blocks = [task_shards(t, num_tasks, num_records=num_shards * 10 - 3 if num_shards else 0,
                          samples_per_shard=10).block for t in range(num_tasks)]
    assert [i for block in blocks for i in block] == list(range(num_shards))  # in order: contiguous
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1


def test_without_a_record_count_each_task_takes_every_nth_shard() -> None:
    shards = task_shards(1, 3, num_records=None, samples_per_shard=10)
    assert shards.shard_span() == (0, None) and [i for i in range(8) if shards.owns(i)] == [1, 4, 7]


@pytest.fixture(scope="module")
def tars(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The input, written once: each test copies it to ``<tmp_path>/in``."""
    root = tmp_path_factory.mktemp("tars")
    for t in range(TARS):
        members: list[tuple[str, bytes | str]] = []
        for j in range(t * PER_TAR, (t + 1) * PER_TAR):
            members += [(f"{j:09d}.jpg", image(COPIES.get(j, j), (240, 180))), (f"{j:09d}.txt", f"caption {j}")]
        tar = write_tar(root / f"{t:05d}.tar", members)
        if t == BROKEN:
            with tarfile.open(tar) as whole:
                cut = whole.getmembers()[4].offset_data + 10  # inside the 3rd sample's image
            tar.write_bytes(tar.read_bytes()[:cut])
    return root


def _config(tmp_path: Path, store: str) -> RunConfig:
    return load_config(["data=raw", "data.input_kind=img2dataset", f"data.input={tmp_path / 'in'}",
                        "data.caption_columns=[txt]", f"storage.root={tmp_path / store}", "data.image_size=24",
                        "data.samples_per_shard=3", "data.prep_workers=1", *NO_EVAL])


def test_header_counts_equal_what_the_reader_yields(tmp_path: Path, tars: Path) -> None:
    data = _config(tmp_path, "out").data
    shutil.copytree(tars, tmp_path / "in")
    per_tar = [sum(1 for _ in img2dataset.records(dataclasses.replace(data, input=url)))
               for url in img2dataset.tar_urls(data.input)]
    assert img2dataset.record_counts(data) == per_tar == [4, 4, 4, 3, 4]  # the broken one: 2 samples + broken_tar
    every = list(img2dataset.records(data))
    for start in (0, 3, 4, 9, 14, 18, 19):
        assert [r.source for r in img2dataset.records(data, start=start, counts=per_tar)] == \
            [r.source for r in every[start:]]


def test_compressed_tars_cannot_be_counted_from_headers(tmp_path: Path, tars: Path) -> None:
    shutil.copytree(tars, tmp_path / "in")
    first = tmp_path / "in" / "00000.tar"
    first.write_bytes(gzip.compress(first.read_bytes()))
    assert img2dataset.record_counts(_config(tmp_path, "out").data) is None


def _counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """Bytes read through each of img2dataset's tar openers, per open."""
    reads: dict[str, list[int]] = {"open_shard": [], "open_unbuffered": []}
    for name, opened in reads.items():
        monkeypatch.setattr(img2dataset, name, _counting(getattr(img2dataset, name), opened))
    return reads


def _counting(open_tar: Any, opened: list[int]) -> Any:
    def counting_open(url: Any) -> Any:
        stream, index = open_tar(url), len(opened)
        opened.append(0)
        read = stream.read

        def counted_read(size: int = -1) -> bytes:
            data = read(size)
            opened[index] += len(data)
            return data

        stream.read = counted_read
        return stream
    return counting_open


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_each_task_reads_its_share_of_the_tars_and_the_result_equals_one_process(
        tmp_path: Path, tars: Path, monkeypatch: pytest.MonkeyPatch, num_tasks: int) -> None:
    shutil.copytree(tars, tmp_path / "in")
    one = _config(tmp_path, "one")
    store = LocalStore(one.storage.root)
    key = prepare(one.data, one.eval, store)["train"]
    reference, one_dir = store.read_json(f"{key}/{MANIFEST}"), Path(store.url(key))
    assert reference["stats"]["skipped"] == {"broken_tar": 1, "duplicate": len(COPIES)}

    cfg = _config(tmp_path, f"array{num_tasks}")
    array, key = LocalStore(cfg.storage.root), train_data_key(cfg.data)
    sizes = [path.stat().st_size for path in sorted((tmp_path / "in").glob("*.tar"))]
    for task in range(num_tasks):
        with monkeypatch.context() as patch:
            reads = _counted(patch)
            prep_task(cfg.data, array, key, task=task, num_tasks=num_tasks)
        assert len(reads["open_unbuffered"]) == TARS  # the header walk, once per tar...
        assert sum(reads["open_unbuffered"]) < 0.3 * sum(sizes)  # ... reading little more than the headers
        opened = reads["open_shard"]
        assert 1 <= len(opened) <= -(-TARS // num_tasks) + 2  # its block's tars (+ the broken tar, counted by reading)
        # 1/T of the input, the start of the tar its first record is in, and the broken tar, read whole to count it
        assert sum(opened) <= sum(sizes) / num_tasks + max(sizes) + sizes[BROKEN], (task, opened, sizes)
    manifest = finish_array(cfg.data, array, key, num_tasks=num_tasks)
    assert manifest == reference
    for shard in reference["shards"]:
        assert (Path(array.url(key)) / shard["name"]).read_bytes() == (one_dir / shard["name"]).read_bytes()


def test_a_task_stops_reading_at_its_last_shard(tmp_path: Path, tars: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(tars, tmp_path / "in")
    cfg = _config(tmp_path, "array")
    reads = _counted(monkeypatch)
    prep_task(cfg.data, LocalStore(cfg.storage.root), train_data_key(cfg.data), task=0, num_tasks=4)
    # 19 records make shards 0..6; task 0 of 4 writes shard 0 (records 0-2): it reads the first tar up to its
    # 4th sample, and no other (the broken tar is read whole, before, to count its records)
    broken, first = reads["open_shard"]
    assert broken == (tmp_path / "in" / f"{BROKEN:05d}.tar").stat().st_size
    with tarfile.open(tmp_path / "in" / "00000.tar") as tar:
        fourth = tar.getmembers()[6].offset  # its header: read to see that the 3rd sample has ended
    assert fourth < first <= fourth + tarfile.RECORDSIZE < (tmp_path / "in" / "00000.tar").stat().st_size
