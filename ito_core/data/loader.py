"""Read shards: the resumable, deterministic training stream (each rank reads only its shards) and eval sets.

The training order is ``order.py``'s: per epoch each rank gets whole shards, reads them through up to
``lanes`` lanes, and interleaves the lanes' samples by a seeded pattern; batch ``b`` of a rank is positions
``[b * B, (b + 1) * B)`` of its concatenated epochs. It depends on the shards' sample counts (the prep
manifest's), the seed, the rank and the world size, and on nothing else.

**Workers.** With a DataLoader of W workers, worker w reads the lanes ``w, w + W, ...`` of each epoch (so the
rank's shards are split between its workers, and no shard is read twice per epoch), and for every batch
yields a *piece*: its lanes' samples of that batch, decoded, with their slots. DataLoader's round-robin hands
the main process the W pieces of batch 0, then of batch 1, ...; ``TrainLoader`` puts each batch together
from its pieces. So the batches are the same for any W (W = 0: the main process reads every lane).

**Resume.** The data position is the batch index: a resumed rank is a new stream with ``start_batch = step``.
Earlier epochs are skipped unread (their sizes come from the shard counts); in the epoch it resumes in, each
lane re-reads its shards from the epoch's start (tar reading only, no decoding) up to where it was.
``TrainLoader.state_dict()`` is what a checkpoint keeps: the next batch and the world size.

**World-size change.** A run resumed at another world size (same global batch) continues with the order of
the new world size at batch ``step``: the shards of the interrupted epoch are dealt again among the new
ranks, so until that epoch ends some of its samples can come twice and others not at all (at most one epoch
of difference); from the next epoch on each sample again comes once per epoch.

**Bytes.** Every shard byte a rank reads is counted per epoch (``TrainLoader.bytes_read``): an uninterrupted
epoch reads exactly the sizes of the shards ``order.rank_shards`` gives that rank, about 1 / world size.

A damaged shard fails the stream, or is skipped within ``train.max_bad_shards`` per rank and epoch
(``lanes.py``).

Shape legend: B batch, n samples of a piece, N captions per sample, L context length, H/W image size.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ito_core.data.lanes import Tally, check_bad_shards, lane_samples
from ito_core.data.order import EpochPlan, check_shards, locate, plan_epoch
from ito_core.data.shard_io import decode_sample, iter_shard_samples, open_shard, pick_captions
from ito_core.data.tokenizer import trim_padding

__all__ = ["TrainStream", "TrainLoader", "build_train_loader", "iter_eval_batches", "iter_shard_samples",
           "open_shard", "decode_sample", "pick_captions", "resume_batch"]

log = logging.getLogger(__name__)

Tokenizer = Callable[[list[str]], torch.Tensor]  # list of n texts -> LongTensor [n, L]
LANES = 16  # shards a rank reads at once: a batch mixes up to this many; more workers than lanes idle


class TrainStream(IterableDataset):
    """Infinite stream of *pieces* of batches; ``TrainLoader`` puts them together (see the module docstring)."""

    def __init__(
        self,
        shard_paths: list[str],
        *,
        shard_samples: list[int],
        batch_size: int,
        num_texts: int,
        tokenizer: Tokenizer,
        seed: int,
        rank: int,
        world_size: int,
        start_batch: int = 0,
        shuffle_buffer: int = 256,
        lanes: int = LANES,
        max_bad_shards: int = 0,
    ) -> None:
        """``shard_samples``: each shard's sample count (the prep manifest's). ``shuffle_buffer``: samples each
        lane holds to shuffle. ``max_bad_shards``: missing or truncated shards a rank skips per epoch."""
        super().__init__()
        if not shard_paths:
            raise ValueError("TrainStream got no shards (data.shards / the prep manifest lists none)")
        if len(shard_samples) != len(shard_paths):
            raise ValueError(f"TrainStream got {len(shard_paths)} shards but {len(shard_samples)} sample counts")
        if batch_size < 1 or num_texts < 1 or start_batch < 0 or shuffle_buffer < 1 or max_bad_shards < 0:
            raise ValueError(
                f"TrainStream(batch_size={batch_size}, num_texts={num_texts}, start_batch={start_batch}, "
                f"shuffle_buffer={shuffle_buffer}, max_bad_shards={max_bad_shards}): need batch_size, num_texts, "
                "shuffle_buffer >= 1 and the others >= 0"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"TrainStream(rank={rank}, world_size={world_size}): need 0 <= rank < world_size")
        check_shards(shard_samples, world_size=world_size, lanes=lanes)
        self.shard_paths = list(shard_paths)
        self.shard_samples = list(shard_samples)
        self.batch_size = batch_size
        self.num_texts = num_texts
        self.tokenizer = tokenizer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.shuffle_buffer = shuffle_buffer
        self.lanes = lanes
        self.max_bad_shards = max_bad_shards

    def plan(self, epoch: int) -> EpochPlan:
        return plan_epoch(self.shard_samples, seed=self.seed, epoch=epoch, rank=self.rank,
                          world_size=self.world_size, lanes=self.lanes)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        tally = Tally(self.max_bad_shards)
        epoch, offset = locate(self.start_batch * self.batch_size, self.shard_samples, seed=self.seed,
                               rank=self.rank, world_size=self.world_size)
        plan, lanes = self._open_epoch(epoch, offset, worker_id, num_workers, tally)
        for b in itertools.count(self.start_batch):
            slots, picked = [], []
            for slot in range(self.batch_size):
                if offset == plan.size:
                    _check_exhausted(lanes, plan)
                    plan, lanes = self._open_epoch(plan.epoch + 1, 0, worker_id, num_workers, tally)
                    offset = 0
                lane = plan.labels[offset]
                offset += 1
                if lane in lanes:
                    slots.append(slot)
                    picked.append((plan.epoch, next(lanes[lane])))
            yield self._piece(b, slots, picked, tally.drain())

    def _open_epoch(self, epoch: int, offset: int, worker_id: int, num_workers: int,
                    tally: Tally) -> tuple[EpochPlan, dict[int, Iterator[dict[str, Any]]]]:
        """This worker's lanes of ``epoch``, each advanced to ``offset`` (read, not decoded)."""
        plan = self.plan(epoch)
        urls = [[self.shard_paths[i] for i in shards] for shards in plan.lanes]
        lanes = {}
        for lane in range(worker_id, len(plan.lanes), num_workers):
            refill = [url for other in (*urls[lane:], *urls[:lane]) for url in other]
            lanes[lane] = lane_samples(urls[lane], refill, size=plan.lane_sizes[lane], epoch=epoch, tally=tally,
                                       seed=f"{self.seed}/buffer/{epoch}/{self.rank}/{lane}",
                                       shuffle_buffer=self.shuffle_buffer)
        done = Counter(plan.labels[:offset])
        for lane, samples in lanes.items():
            for _ in itertools.islice(samples, done[lane]):
                pass
        return plan, lanes

    def _piece(self, batch: int, slots: list[int], picked: list[tuple[int, dict[str, Any]]],
               tally: dict[str, Any]) -> dict[str, Any]:
        """This worker's samples of one batch, decoded: images uint8 [n,3,H,W], texts long [n,N,L]."""
        images, texts, keys = [], [], []
        for epoch, sample in picked:
            key = sample["__key__"]
            image_HWC, meta = decode_sample(sample)
            images.append(image_HWC)
            rng = random.Random(f"{self.seed}/{epoch}/{key}")  # same picks whichever worker decodes
            texts.extend(pick_captions(meta["captions"], self.num_texts, rng=rng))
            keys.append(key)
        piece: dict[str, Any] = {"batch": batch, "slots": slots, "keys": keys, **tally}
        if picked:
            _check_sizes([image.shape for image in images])
            piece["images"] = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
            piece["texts"] = self.tokenizer(texts).view(len(picked), self.num_texts, -1)  # trimmed once assembled
        return piece


def _check_exhausted(lanes: dict[int, Iterator[dict[str, Any]]], plan: EpochPlan) -> None:
    """At an epoch's end each lane must be read out: a sample left means a shard grew since prep counted it."""
    for lane, samples in lanes.items():
        if next(samples, None) is not None:
            raise ValueError(f"epoch {plan.epoch}: lane {lane} holds more than the {plan.lane_sizes[lane]} samples "
                             "the prep manifest counts for its shards: the shards changed; re-run prep")


def _check_sizes(shapes: list[tuple[int, ...]]) -> None:
    if len(set(shapes)) != 1:
        raise ValueError(f"shards mix image sizes {sorted(set(shapes))}: re-run prep")


class TrainLoader:
    """Whole batches {"images": uint8 [B,3,H,W], "texts": long [B,N,L], "keys": [B]} from a ``TrainStream``.

    Also keeps the rank's data position (``state_dict``) and the shard bytes read per epoch (``bytes_read``)."""

    def __init__(self, stream: TrainStream, *, num_workers: int) -> None:
        self.stream, self.num_workers = stream, num_workers
        self.next_batch = stream.start_batch
        self.bytes_read: Counter[int] = Counter()  # epoch -> shard bytes this rank read
        self.bad_shards: dict[int, dict[str, str]] = {}  # epoch -> url -> problem
        # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's global RNG each
        # time it is iterated, which would shift the RNG state a resumed run restores.
        self.loader = DataLoader(stream, batch_size=None, num_workers=num_workers, persistent_workers=False,
                                 in_order=True,  # the round-robin over workers is what hands over batch by batch
                                 generator=torch.Generator().manual_seed(stream.seed),
                                 prefetch_factor=2 if num_workers > 0 else None)

    def state_dict(self) -> dict[str, int]:
        return {"batch": self.next_batch, "world_size": self.stream.world_size}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pieces = iter(self.loader)
        while True:
            batch = self._assemble([next(pieces) for _ in range(max(self.num_workers, 1))])
            self.next_batch += 1
            yield batch

    def _assemble(self, pieces: list[dict[str, Any]]) -> dict[str, Any]:
        assert all(p["batch"] == self.next_batch for p in pieces), [p["batch"] for p in pieces]
        for piece in pieces:
            self.bytes_read.update(piece["bytes"])
            for epoch, url, problem in piece["bad"]:
                self.bad_shards.setdefault(epoch, {})[url] = problem
                check_bad_shards(epoch, self.bad_shards[epoch], self.stream.max_bad_shards)
        full = [p for p in pieces if p["slots"]]
        _check_sizes([p["images"].shape[1:] for p in full])
        size, num_texts = self.stream.batch_size, self.stream.num_texts
        images_BCHW = torch.empty((size, *full[0]["images"].shape[1:]), dtype=torch.uint8)
        texts_BNL = torch.empty((size, num_texts, full[0]["texts"].shape[-1]), dtype=torch.long)
        keys: list[str] = [""] * size
        for piece in full:
            slots = torch.tensor(piece["slots"])
            images_BCHW[slots] = piece["images"]
            texts_BNL[slots] = piece["texts"]
            for slot, key in zip(piece["slots"], piece["keys"], strict=True):
                keys[slot] = key
        texts_BNL = trim_padding(texts_BNL)
        if torch.cuda.is_available():  # pinned batches copy to the GPU without blocking the host
            images_BCHW, texts_BNL = images_BCHW.pin_memory(), texts_BNL.pin_memory()
        return {"images": images_BCHW, "texts": texts_BNL, "keys": keys}


def build_train_loader(stream: TrainStream, *, num_workers: int) -> TrainLoader:
    return TrainLoader(stream, num_workers=num_workers)


def resume_batch(saved: dict[str, int] | None, *, step: int, world_size: int) -> int:
    """The batch a resumed rank starts at: the step (one batch per step). A world-size change is logged: the
    rest of the interrupted epoch follows the new world size's order (module docstring)."""
    if saved is not None:
        assert saved["batch"] == step, (saved, step)
        if saved["world_size"] != world_size:
            log.warning("data: resuming a %d-rank run on %d ranks at batch %d: the rest of the interrupted epoch "
                        "is dealt anew among %d ranks (some of its samples may repeat or be missed until the epoch "
                        "ends)", saved["world_size"], world_size, step, world_size)
    return step


@dataclass
class EvalBatch:
    images_BCHW: torch.Tensor  # uint8
    captions: list[list[str]]  # every caption of each sample
    labels_B: torch.Tensor  # long; -1 where a sample has no label


def iter_eval_batches(shard_paths: list[str], *, batch_size: int, limit: int = 0) -> Iterator[EvalBatch]:
    """An eval set in shard order, ``batch_size`` samples at a time (the last batch may be smaller); the first
    ``limit`` samples if > 0. Only one batch of images is decoded at a time: ImageNet val at 224 px would be
    7.5 GB as one uint8 tensor."""
    samples = iter_shard_samples(list(shard_paths))
    if limit > 0:
        samples = itertools.islice(samples, limit)
    count = 0
    while chunk := [decode_sample(sample) for sample in itertools.islice(samples, batch_size)]:
        count += len(chunk)
        images_BCHW = torch.from_numpy(np.stack([image_HWC for image_HWC, _ in chunk])).permute(0, 3, 1, 2)
        yield EvalBatch(images_BCHW.contiguous(), [list(meta["captions"]) for _, meta in chunk],
                        torch.tensor([int(meta.get("label", -1)) for _, meta in chunk], dtype=torch.long))
    if count == 0:
        raise ValueError(f"no eval samples in {shard_paths[:3]}")
