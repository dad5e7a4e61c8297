from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from ito_core.data.loader import TrainStream, build_train_loader, iter_eval_batches, iter_shard_samples
from ito_core.data.shards import shard_paths

NUM_SAMPLES = 70  # conftest's shapes_shard_dir: 3 shards (25, 25, 20), 32x32 images, 3 captions each


def _stream(shard_dir: Path, tokenizer, **kw) -> TrainStream:
    args = dict(batch_size=8, num_texts=2, seed=5, rank=0, world_size=1, shuffle_buffer=16) | kw
    return TrainStream(shard_paths(shard_dir), tokenizer=tokenizer, **args)


def _take(stream: TrainStream, num_batches: int, num_workers: int = 0) -> list[dict]:
    return list(itertools.islice(build_train_loader(stream, num_workers=num_workers), num_batches))


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
    # Knowing the epoch size lets a resume skip whole epochs unread; the batches stay the same.
    epochs_read: list[int] = []
    read_epoch = TrainStream._epoch_samples

    def spy(self: TrainStream, epoch: int):
        epochs_read.append(epoch)
        return read_epoch(self, epoch)

    monkeypatch.setattr(TrainStream, "_epoch_samples", spy)
    skipping = _take(_stream(shapes_shard_dir, tokenizer, start_batch=17, samples_per_epoch=NUM_SAMPLES), 3)
    assert _same(uninterrupted[17:], skipping)
    assert epochs_read == [1, 2]  # batch 17 starts at sample 136 of epoch 1 (136 // 70): epoch 0 unread


def test_epochs_differ_in_order(shapes_shard_dir: Path, tokenizer) -> None:
    keys = [k for batch in _take(_stream(shapes_shard_dir, tokenizer), 18) for k in batch["keys"]]
    epoch0, epoch1 = keys[:NUM_SAMPLES], keys[NUM_SAMPLES : 2 * NUM_SAMPLES]
    assert sorted(epoch0) == sorted(epoch1) and epoch0 != epoch1
    other_seed = [k for batch in _take(_stream(shapes_shard_dir, tokenizer, seed=6), 8) for k in batch["keys"]]
    assert other_seed != keys[:64]


def test_ranks_split_each_epoch_disjointly(shapes_shard_dir: Path, tokenizer) -> None:
    per_rank = NUM_SAMPLES // 2  # 35 each: the split is by sample, so ranks match even with 3 shards
    seen = []
    for rank in (0, 1):
        stream = _stream(shapes_shard_dir, tokenizer, rank=rank, world_size=2, batch_size=5)
        seen.append([k for batch in _take(stream, per_rank // 5) for k in batch["keys"]])
    assert len(seen[0]) == len(seen[1]) == per_rank
    assert not set(seen[0]) & set(seen[1])
    assert set(seen[0]) | set(seen[1]) == {s["__key__"] for s in iter_shard_samples(shard_paths(shapes_shard_dir))}


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


def test_wrong_epoch_size_is_caught(shapes_shard_dir: Path, tokenizer) -> None:
    with pytest.raises(ValueError, match="shards changed"):
        _take(_stream(shapes_shard_dir, tokenizer, samples_per_epoch=NUM_SAMPLES + 1), 12)


def test_bad_arguments_are_rejected(shapes_shard_dir: Path, tokenizer) -> None:
    with pytest.raises(ValueError, match="rank"):
        _stream(shapes_shard_dir, tokenizer, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no shards"):
        TrainStream([], batch_size=1, num_texts=1, tokenizer=tokenizer, seed=0, rank=0, world_size=1)


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
