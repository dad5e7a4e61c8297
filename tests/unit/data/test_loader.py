from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from ito_core.data.embedded import shapes_samples
from ito_core.data.loader import TrainStream, build_train_loader, iter_eval_batches, iter_shard_samples, resume_batch
from ito_core.data.order import plan_epoch, rank_shards
from ito_core.data.shards import read_manifest, shard_paths, write_shards

NUM_SAMPLES = 70  # conftest's shapes_shard_dir: 3 shards (25, 25, 20), 32x32 images, 3 captions each


def _counts(shard_dir: Path) -> list[int]:
    return [shard["num_samples"] for shard in read_manifest(shard_dir)["shards"]]


def _stream(shard_dir: Path, tokenizer, **kw) -> TrainStream:
    args = dict(batch_size=8, num_texts=2, seed=5, rank=0, world_size=1, shuffle_buffer=16,
                shard_samples=_counts(shard_dir)) | kw
    return TrainStream(shard_paths(shard_dir), tokenizer=tokenizer, **args)


def _take(stream: TrainStream, num_batches: int, num_workers: int = 0) -> list[dict]:
    return list(itertools.islice(build_train_loader(stream, num_workers=num_workers), num_batches))


@pytest.fixture(scope="module")
def ten_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 samples in 10 shards of 7: enough shards for 2 and 4 ranks, and several lanes per rank."""
    out_dir = tmp_path_factory.mktemp("ten_shards")
    write_shards(shapes_samples("train", num_samples=NUM_SAMPLES, image_size=16, seed=4), out_dir, image_size=16,
                 samples_per_shard=7, jpeg_quality=90)
    return out_dir


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["keys"] == y["keys"] and torch.equal(x["images"], y["images"]) and torch.equal(x["texts"], y["texts"])
        for x, y in zip(a, b, strict=True)
    )


def test_batches_have_the_promised_shapes(shapes_shard_dir: Path, tokenizer) -> None:
    (batch,) = _take(_stream(shapes_shard_dir, tokenizer, num_texts=3), 1)
    assert batch["images"].shape == (8, 3, 32, 32) and batch["images"].dtype == torch.uint8
    texts_BNL = batch["texts"]
    assert texts_BNL.shape[:2] == (8, 3) and texts_BNL.dtype == torch.long
    # Cut after the longest caption (rounded up to 8 tokens): every EOT is kept, no column past the last one.
    longest = int(texts_BNL.argmax(-1).max()) + 1
    assert texts_BNL.shape[2] == -(-longest // 8) * 8 < tokenizer.context_length
    assert len(set(batch["keys"])) == 8


def test_same_batches_for_any_number_of_workers(shapes_shard_dir: Path, tokenizer) -> None:
    # 12 batches of 8 = 96 samples: more than one epoch of 70, so batch 8 straddles two epochs.
    reference = _take(_stream(shapes_shard_dir, tokenizer), 12, num_workers=0)
    assert _same(reference, _take(_stream(shapes_shard_dir, tokenizer), 12, num_workers=1))
    assert _same(reference, _take(_stream(shapes_shard_dir, tokenizer), 12, num_workers=2))
    first_epoch = [k for batch in reference for k in batch["keys"]][:NUM_SAMPLES]
    assert len(set(first_epoch)) == NUM_SAMPLES  # an epoch visits every sample once


def test_resume_equals_the_tail_of_an_uninterrupted_stream(
    shapes_shard_dir: Path, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    uninterrupted = _take(_stream(shapes_shard_dir, tokenizer), 20)
    for k in (3, 9, 17):  # inside epoch 0, straddling, inside epoch 2
        resumed = _take(_stream(shapes_shard_dir, tokenizer, start_batch=k), 20 - k, num_workers=2 if k == 9 else 0)
        assert _same(uninterrupted[k:], resumed), k
    # The shards' sample counts let a resume skip whole epochs unread; the batches stay the same.
    epochs_read: list[int] = []
    plan = TrainStream.plan

    def spy(self: TrainStream, epoch: int):
        epochs_read.append(epoch)
        return plan(self, epoch)

    monkeypatch.setattr(TrainStream, "plan", spy)
    loader = build_train_loader(_stream(shapes_shard_dir, tokenizer, start_batch=17), num_workers=0)
    skipping = list(itertools.islice(loader, 3))
    assert _same(uninterrupted[17:], skipping)
    assert epochs_read == [1, 2]  # batch 17 starts at sample 136 of epoch 1 (136 // 70): epoch 0 unread
    assert set(loader.bytes_read) == {1, 2}
    assert loader.state_dict() == {"batch": 20, "world_size": 1}  # what a checkpoint after 3 more steps keeps


def test_epochs_differ_in_order(shapes_shard_dir: Path, tokenizer) -> None:
    keys = [k for batch in _take(_stream(shapes_shard_dir, tokenizer), 18) for k in batch["keys"]]
    epoch0, epoch1 = keys[:NUM_SAMPLES], keys[NUM_SAMPLES : 2 * NUM_SAMPLES]
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    other_seed = [k for batch in _take(_stream(shapes_shard_dir, tokenizer, seed=6), 8) for k in batch["keys"]]
    assert other_seed != keys[:64]


def _shard_keys(paths: list[str]) -> set[str]:
    return {s["__key__"] for s in iter_shard_samples(paths)}


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_read_only_their_whole_shards(ten_shards: Path, tokenizer, world_size: int) -> None:
    """Each epoch the ranks split the shards: a rank's epoch is exactly the samples of its shards, and the
    bytes it reads are exactly their sizes (counted by the reader), about 1 / world size of the data."""
    paths, counts = shard_paths(ten_shards), _counts(ten_shards)
    sizes = [Path(p).stat().st_size for p in paths]
    for epoch in (0, 1):
        mine = [rank_shards(len(paths), seed=5, epoch=epoch, rank=r, world_size=world_size)
                for r in range(world_size)]
        assert sorted(i for shards in mine for i in shards) == list(range(len(paths)))  # a partition
        assert {len(shards) for shards in mine} <= {len(paths) // world_size, -(-len(paths) // world_size)}
    for rank in range(world_size):
        # Batches of 1 end exactly at epoch 0's end; with 2 workers each reads some of the rank's lanes.
        epoch0 = plan_epoch(counts, seed=5, epoch=0, rank=rank, world_size=world_size, lanes=16)
        loader = build_train_loader(_stream(ten_shards, tokenizer, rank=rank, world_size=world_size, batch_size=1),
                                    num_workers=2)
        keys = [k for batch in itertools.islice(loader, epoch0.size) for k in batch["keys"]]
        assigned = rank_shards(len(paths), seed=5, epoch=0, rank=rank, world_size=world_size)
        assert sorted(keys) == sorted(_shard_keys([paths[i] for i in assigned]))  # each of its samples once
        assert dict(loader.bytes_read) == {0: sum(sizes[i] for i in assigned)}
        assert loader.bytes_read[0] <= sum(sizes) / world_size + max(sizes)


def test_ranks_split_each_epoch_disjointly(shapes_shard_dir: Path, tokenizer) -> None:
    paths, seen = shard_paths(shapes_shard_dir), []
    for rank in (0, 1):  # 3 shards: one rank reads 2 of them, the other 1
        stream = _stream(shapes_shard_dir, tokenizer, rank=rank, world_size=2, batch_size=5)
        seen.append([k for batch in _take(stream, stream.plan(0).size // 5) for k in batch["keys"]])
    assert sorted(len(keys) for keys in seen) in ([20, 50], [25, 45])  # whole shards of 25, 25, 20
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == _shard_keys(paths)


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # more workers than this machine's cores
def test_two_ranks_give_the_same_batches_for_any_number_of_workers(ten_shards: Path, tokenizer) -> None:
    for rank in (0, 1):
        reference = _take(_stream(ten_shards, tokenizer, rank=rank, world_size=2, batch_size=6), 8)
        for num_workers in (3, 4):  # 3 lanes per rank (5 shards): uneven, and more workers than lanes
            got = _take(_stream(ten_shards, tokenizer, rank=rank, world_size=2, batch_size=6), 8, num_workers)
            assert _same(reference, got), (rank, num_workers)


def test_a_world_size_change_resumes_at_the_step_in_the_new_order(caplog: pytest.LogCaptureFixture) -> None:
    assert resume_batch(None, step=0, world_size=2) == 0
    assert resume_batch({"batch": 3, "world_size": 2}, step=3, world_size=2) == 3
    assert not caplog.records
    assert resume_batch({"batch": 3, "world_size": 2}, step=3, world_size=1) == 3
    assert "resuming a 2-rank run on 1 ranks at batch 3" in caplog.text


def test_captions_per_sample(shapes_shard_dir: Path, tokenizer) -> None:
    captions = {
        s["__key__"]: json.loads(s["json"])["captions"] for s in iter_shard_samples(shard_paths(shapes_shard_dir))
    }
    for num_texts in (1, 3, 5):  # samples hold 3 captions
        (batch,) = _take(_stream(shapes_shard_dir, tokenizer, num_texts=num_texts), 1)
        for key, texts_NL in zip(batch["keys"], batch["texts"], strict=True):
            picked = [tokenizer.decode(ids_L) for ids_L in texts_NL]
            assert set(picked) <= set(captions[key])
            assert len(set(picked)) == min(num_texts, 3)  # distinct while there are enough
    (again,) = _take(_stream(shapes_shard_dir, tokenizer, num_texts=3), 1)
    assert torch.equal(again["texts"], _take(_stream(shapes_shard_dir, tokenizer, num_texts=3), 1)[0]["texts"])


@pytest.mark.parametrize("counts", [[25, 25, 21], [25, 24, 20]])
def test_wrong_shard_counts_are_caught(shapes_shard_dir: Path, tokenizer, counts: list[int]) -> None:
    with pytest.raises(ValueError, match="the shards changed"):
        _take(_stream(shapes_shard_dir, tokenizer, shard_samples=counts), 12)


def test_bad_arguments_are_rejected(shapes_shard_dir: Path, tokenizer) -> None:
    with pytest.raises(ValueError, match="rank"):
        _stream(shapes_shard_dir, tokenizer, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no shards"):
        TrainStream([], shard_samples=[], batch_size=1, num_texts=1, tokenizer=tokenizer, seed=0, rank=0,
                    world_size=1)
    with pytest.raises(ValueError, match=r"3 shard\(s\) for 4 ranks.*data.samples_per_shard"):
        _stream(shapes_shard_dir, tokenizer, rank=0, world_size=4)


def test_iterating_the_loader_leaves_torch_rng_alone(shapes_shard_dir: Path, tokenizer) -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    _take(_stream(shapes_shard_dir, tokenizer), 1, num_workers=1)
    assert torch.equal(before, torch.get_rng_state())  # a resumed trainer's restored RNG stays exact


def test_eval_batches_stream_the_set_in_shard_order(shapes_shard_dir: Path) -> None:
    batches = list(iter_eval_batches(shard_paths(shapes_shard_dir), batch_size=16))
    assert [len(b.captions) for b in batches] == [16, 16, 16, 16, 6]  # NUM_SAMPLES, one batch decoded at a time
    images_NCHW = torch.cat([b.images_BCHW for b in batches])
    labels_N = torch.cat([b.labels_B for b in batches])
    captions = [caps for b in batches for caps in b.captions]
    assert images_NCHW.shape == (NUM_SAMPLES, 3, 32, 32) and images_NCHW.dtype == torch.uint8
    assert len(captions) == NUM_SAMPLES and all(len(c) == 3 for c in captions)
    assert labels_N.dtype == torch.long and int(labels_N.min()) >= 0 and int(labels_N.max()) < 6
    few = list(iter_eval_batches(shard_paths(shapes_shard_dir), batch_size=4, limit=10))
    assert [len(b.captions) for b in few] == [4, 4, 2]
    assert torch.equal(torch.cat([b.images_BCHW for b in few]), images_NCHW[:10])
    assert [caps for b in few for caps in b.captions] == captions[:10]
    assert torch.equal(torch.cat([b.labels_B for b in few]), labels_N[:10])


def test_an_empty_eval_set_is_an_error() -> None:
    with pytest.raises(ValueError, match="no eval samples"):
        list(iter_eval_batches([], batch_size=4))
