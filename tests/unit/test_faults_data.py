"""Damaged training data: a shard missing from disk (but listed in the prep manifest), truncated mid-file
or empty fails the training stream with an error naming the shard and the fix, since skipping it would
change what the run trains on; ``train.max_bad_shards`` skips that many per epoch instead (counted in a
warning, the samples before the damage kept). An S3 outage is never taken for a bad shard, and a tar
member with an absolute or ``..`` path is refused.

Bad images, captions and tars at prep time are covered by tests/unit/data/test_shards.py and
tests/unit/data/test_raw_prep.py (skipped and counted by reason in the manifest).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import logging
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ito_core.config import load_config
from ito_core.data import shard_io
from ito_core.data.loader import TrainStream, build_train_loader, iter_shard_samples
from ito_core.storage import StorageError

BATCH, SAMPLES = 8, 96  # small_shards: 3 shards of 32 samples


def tokenize(texts: list[str]) -> torch.Tensor:
    return torch.zeros(len(texts), 4, dtype=torch.long)


def batches(shards: list[str], num: int, **kw: int) -> list[dict]:
    stream = TrainStream(shards, batch_size=BATCH, num_texts=1, tokenizer=tokenize, seed=0, rank=0, world_size=1,
                         shard_samples=[SAMPLES // 3] * 3, **kw)
    return list(itertools.islice(build_train_loader(stream, num_workers=0), num))


@pytest.fixture
def shards(small_shards: list[str], tmp_path: Path) -> list[str]:
    """A copy of the three shards that a test may damage."""
    return [shutil.copy(path, tmp_path) for path in small_shards]


def truncate(path: str, keep: float) -> None:
    """Cut the file inside the data of the member at ``keep`` of the archive's members (none at 0). A cut on or
    inside a header reads as a clean end of the tar (Python's tarfile), which the sample count catches instead."""
    data = Path(path).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = archive.getmembers()
    member = members[int(len(members) * keep)] if keep > 0 else None
    Path(path).write_bytes(data[:member.offset_data + member.size // 2] if member else b"")


DAMAGE = {"missing": lambda p: Path(p).unlink(), "truncated mid-file": lambda p: truncate(p, 0.5),
          "zero bytes": lambda p: truncate(p, 0)}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_bad_shard_fails_the_stream_naming_it_and_the_fix(shards: list[str], damage: str) -> None:
    DAMAGE[damage](shards[1])
    problem = "missing" if damage == "missing" else "truncated or not a tar"
    with pytest.raises(ValueError, match=rf"shard {shards[1]} is {problem}.*train.max_bad_shards=0.*"
                                         r"restore the shard or re-run prep.*set train.max_bad_shards"):
        batches(shards, 12)


def test_tolerated_bad_shards_are_skipped_and_counted(shards: list[str], caplog: pytest.LogCaptureFixture) -> None:
    good = {s["__key__"] for s in iter_shard_samples(shards)}
    truncate(shards[1], 0.5)
    kept = {s["__key__"] for s in iter_shard_samples([shards[0], shards[2]])}
    before_damage = {s["__key__"] for s in _until_damage(shards[1])}
    caplog.set_level(logging.WARNING, logger="ito_core")

    readable = kept | before_damage
    got = batches(shards, 2 * SAMPLES // BATCH, max_bad_shards=1)  # two epochs

    keys = [k for b in got for k in b["keys"]]
    assert 0 < len(before_damage) < 32, "the truncated shard still held some whole samples"
    assert set(keys) == readable and set(keys) < good
    # The epoch keeps its length (ranks must take equal steps): the lost samples' places go to readable ones.
    epoch = keys[:SAMPLES]
    assert set(epoch) == readable and len(epoch) - len(set(epoch)) == SAMPLES - len(readable)
    warnings = [r.getMessage() for r in caplog.records if "skipping the rest of shard" in r.getMessage()]
    assert len(warnings) == 2 and all(shards[1] in w and "1/1 bad shards" in w for w in warnings), warnings


def _until_damage(url: str) -> Iterator[dict]:
    """The samples a truncated shard yields before its damage."""
    samples = iter_shard_samples([url])
    with contextlib.suppress(tarfile.ReadError):
        yield from samples


def test_more_bad_shards_than_tolerated_fail(shards: list[str]) -> None:
    DAMAGE["missing"](shards[0])
    DAMAGE["truncated mid-file"](shards[2])
    with pytest.raises(ValueError, match=r"2 bad shard\(s\) in epoch 0, more than train.max_bad_shards=1"):
        batches(shards, 12, max_bad_shards=1)


def test_an_s3_outage_is_not_a_bad_shard(shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping shards the endpoint could not serve would make the data depend on outages."""
    def unreachable(url: str) -> None:
        raise StorageError(f"read {url} failed: the S3 endpoint kept failing")

    monkeypatch.setattr(shard_io, "open_shard", unreachable)
    with pytest.raises(StorageError, match="kept failing"):
        batches(shards, 1, max_bad_shards=3)


@pytest.mark.parametrize("name", ["../escape.jpg", "/abs/path.jpg", "a/../../b.json"])
def test_a_tar_member_with_an_absolute_or_dotdot_path_is_refused(tmp_path: Path, name: str) -> None:
    shard = tmp_path / "crafted.tar"
    with tarfile.open(shard, "w") as tar:
        for member, data in (("ok.jpg", b"x"), ("ok.json", b"{}"), (name, b"y")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match=rf"refusing tar member {name!r} \(absolute path or '..'\)"):
        list(iter_shard_samples([str(shard)]))


def test_a_negative_tolerance_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"train.max_bad_shards.*use >= 0"):
        load_config(["train.max_bad_shards=-1"])
