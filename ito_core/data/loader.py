"""Read shards: a resumable, deterministic training stream and the eval-set reader.

The training stream of one rank is a pure function of (shards, seed, rank, world_size):

- epoch e visits the shards in an order shuffled with (seed, e), passes their samples through a
  shuffle buffer seeded with (seed, e), and rank r keeps samples r, r + world_size, ... of that
  epoch (a sample-level split: ranks get equal counts, give or take one, even with one shard);
- the rank's raw samples of epochs 0, 1, 2, ... are concatenated, and batch b is raw samples
  [b * B, (b + 1) * B) of that sequence; a batch can straddle two epochs.

So the data position is just the batch index: resuming after k batches is a new stream with
``start_batch=k``. With a DataLoader of W workers, worker w yields batches start_batch + w,
start_batch + w + W, ...: every worker walks the raw stream (tar reading only) and decodes only
its own batches, and DataLoader's round-robin over workers restores the order, so the batch
sequence is the same for any W. The price: each worker of each rank reads every shard.

A shard that is missing or truncated (not a complete tar) stops the stream with an error naming it:
skipping it would change what the run trains on. ``max_bad_shards`` (``train.max_bad_shards``) skips up
to that many per epoch instead, keeping the samples read before the damage and logging each; the epoch
then holds fewer samples, so a resumed run no longer equals an uninterrupted one exactly. An S3 outage is
not a bad shard: the reader retries it, then fails.

Shape legend: B batch, N captions per sample, L context length, H/W image size.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.gopen import gopen
from webdataset.tariterators import group_by_keys, tar_file_expander

from ito_core.data.tokenizer import trim_padding
from ito_core.storage import MANIFEST, open_s3_object

log = logging.getLogger(__name__)

Tokenizer = Callable[[list[str]], torch.Tensor]  # list of n texts -> LongTensor [n, L]
BAD_SHARD_ERRORS = (FileNotFoundError, tarfile.ReadError)  # missing; truncated, empty or not a tar


def open_shard(url: str) -> Any:
    """The one place shard URLs are opened. ``s3://bucket/key`` streams through boto3 (webdataset has no
    s3 support): endpoint from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (else AWS), credentials from
    the AWS env, and a dropped connection resumes at the current byte. Anything else (local paths,
    file://, pipe:) goes through webdataset's gopen."""
    if url.startswith("s3://"):
        return open_s3_object(url)
    return gopen(url, "rb")


def iter_shard_samples(urls: list[str]) -> Iterator[dict[str, Any]]:
    """Raw webdataset samples ({"__key__", "__url__", "jpg": bytes, "json": bytes}) of ``urls`` in order."""
    yield from group_by_keys(_checked_members(tar_file_expander(_opened(urls))))


def _checked_members(members: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Member names only become sample keys, never paths we write; a name that would escape a folder
    (absolute or "..") still means a crafted tar, so the shard is refused (webdataset skips links itself)."""
    for member in members:
        path = PurePosixPath(member.get("fname", ""))  # {} is webdataset's end-of-shard marker
        if path.is_absolute() or ".." in path.parts:
            raise ValueError(f"shard {member.get('__url__')}: refusing tar member {member['fname']!r} (absolute "
                             "path or '..'): prep never writes one, so the shard was altered; re-create it")
        yield member


def _opened(urls: list[str]) -> Iterator[dict[str, Any]]:
    for url in urls:
        # tar_file_expander reads a stream to its end before asking for the next one: close it then.
        with open_shard(url) as stream:
            yield {"url": url, "stream": stream}


class TrainStream(IterableDataset):
    """Infinite stream of whole batches {"images": uint8 [B,3,H,W], "texts": long [B,N,L], "keys": [B]}."""

    def __init__(
        self,
        shard_paths: list[str],
        *,
        batch_size: int,
        num_texts: int,
        tokenizer: Tokenizer,
        seed: int,
        rank: int,
        world_size: int,
        start_batch: int = 0,
        shuffle_buffer: int = 1000,
        samples_per_epoch: int = 0,
        max_bad_shards: int = 0,
    ) -> None:
        """``samples_per_epoch``: the shards' total sample count (the prep manifest's ``num_samples``).
        When given, a resume skips whole epochs without reading them, and every epoch read is checked
        against it; 0 walks the stream from epoch 0. ``max_bad_shards``: missing or truncated shards
        skipped per epoch before the stream fails."""
        super().__init__()
        if not shard_paths:
            raise ValueError("TrainStream got no shards (data.shards / the prep manifest lists none)")
        if (batch_size < 1 or num_texts < 1 or start_batch < 0 or shuffle_buffer < 1 or samples_per_epoch < 0
                or max_bad_shards < 0):
            raise ValueError(
                f"TrainStream(batch_size={batch_size}, num_texts={num_texts}, start_batch={start_batch}, "
                f"shuffle_buffer={shuffle_buffer}, samples_per_epoch={samples_per_epoch}, max_bad_shards="
                f"{max_bad_shards}): need batch_size, num_texts, shuffle_buffer >= 1 and the others >= 0"
            )
        if not 0 <= rank < world_size:
            raise ValueError(
                f"TrainStream(rank={rank}, world_size={world_size}): need 0 <= rank < world_size"
            )
        self.shard_paths = list(shard_paths)
        self.batch_size = batch_size
        self.num_texts = num_texts
        self.tokenizer = tokenizer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start_batch = start_batch
        self.shuffle_buffer = shuffle_buffer
        self.samples_per_epoch = samples_per_epoch
        self.max_bad_shards = max_bad_shards
        self._skipped_shards: dict[int, list[str]] = {}  # epoch -> bad shards skipped (this process)
        # This rank's share of an epoch (0 = unknown): samples rank, rank + world_size, ...
        self._rank_epoch_size = len(range(rank, samples_per_epoch, world_size))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        worker_id, num_workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        first_sample = self.start_batch * self.batch_size
        # Whole epochs before the start are skipped unread when their size is known.
        first_epoch = first_sample // self._rank_epoch_size if self._rank_epoch_size else 0
        raw = self._rank_samples(first_epoch)
        to_skip = first_sample - first_epoch * self._rank_epoch_size
        for _ in itertools.islice(raw, to_skip):  # tar reading only, no decoding
            pass
        for b in itertools.count(self.start_batch):
            chunk = list(itertools.islice(raw, self.batch_size))
            if (b - self.start_batch) % num_workers == worker_id:
                yield self._decode_batch(chunk)

    def _rank_samples(self, first_epoch: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(epoch, raw sample) of this rank, from ``first_epoch`` on, forever."""
        for epoch in itertools.count(first_epoch):
            count = 0
            for sample in self._epoch_samples(epoch):
                count += 1
                yield epoch, sample
            short_by_design = bool(self._skipped_shards.pop(epoch, None))
            if count == 0 or (self.samples_per_epoch and count != self._rank_epoch_size and not short_by_design):
                raise ValueError(
                    f"epoch {epoch} gave rank {self.rank}/{self.world_size} {count} samples, expected "
                    f"{self._rank_epoch_size or '> 0'}: shards changed or hold too few samples "
                    f"({self.shard_paths[:3]}...)"
                )

    def _epoch_samples(self, epoch: int) -> Iterator[dict[str, Any]]:
        shards = list(self.shard_paths)
        # String seeds: random.Random hashes them with SHA-512, stable across processes and Pythons.
        random.Random(f"{self.seed}/shards/{epoch}").shuffle(shards)
        rng = random.Random(f"{self.seed}/buffer/{epoch}")
        samples = _shuffled(self._readable_samples(shards, epoch), self.shuffle_buffer, rng)
        return itertools.islice(samples, self.rank, None, self.world_size)

    def _readable_samples(self, shards: list[str], epoch: int) -> Iterator[dict[str, Any]]:
        """Raw samples of ``shards`` in order; a missing or truncated shard fails the stream, or is skipped
        (its samples before the damage kept) while at most ``max_bad_shards`` were this epoch."""
        skipped = self._skipped_shards.setdefault(epoch, [])
        for url in shards:
            try:
                yield from iter_shard_samples([url])
            except BAD_SHARD_ERRORS as err:
                skipped.append(url)
                problem = "missing" if isinstance(err, FileNotFoundError) else f"truncated or not a tar ({err.args[0]})"
                if len(skipped) > self.max_bad_shards:
                    raise ValueError(
                        f"shard {url} is {problem}: {len(skipped)} bad shard(s) in epoch {epoch}, more than "
                        f"train.max_bad_shards={self.max_bad_shards}. Skipping shards changes the data the run trains "
                        "on (and a resumed run then differs from an uninterrupted one), so it is off by default: "
                        f"restore the shard or re-run prep (delete the data set's {MANIFEST} to rebuild it), or "
                        "set train.max_bad_shards to skip that many per epoch") from err
                log.warning("epoch %d: skipping the rest of shard %s (%s); %d/%d bad shards allowed per epoch",
                            epoch, url, problem, len(skipped), self.max_bad_shards)

    def _decode_batch(self, chunk: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        images, texts, keys = [], [], []
        for epoch, sample in chunk:
            key = sample["__key__"]
            image_HWC, meta = decode_sample(sample)
            images.append(image_HWC)
            rng = random.Random(f"{self.seed}/{epoch}/{key}")  # same picks whichever worker decodes
            texts.extend(pick_captions(meta["captions"], self.num_texts, rng=rng))
            keys.append(key)
        if len({image.shape for image in images}) != 1:
            raise ValueError(f"shards mix image sizes {sorted({i.shape for i in images})}: re-run prep")
        images_BHWC = torch.from_numpy(np.stack(images))
        texts_BNL = trim_padding(self.tokenizer(texts).view(len(chunk), self.num_texts, -1))
        return {"images": images_BHWC.permute(0, 3, 1, 2).contiguous(), "texts": texts_BNL, "keys": keys}


def decode_sample(sample: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """A raw shard sample -> (uint8 RGB image [H, W, 3], its JSON metadata)."""
    try:
        image_HWC = np.asarray(Image.open(io.BytesIO(sample["jpg"])).convert("RGB"))
        meta = json.loads(sample["json"])
    except Exception as exc:  # KeyError, PIL's OSError/SyntaxError, JSONDecodeError: all mean a bad shard
        raise ValueError(
            f"cannot decode sample {sample.get('__key__')!r} of {sample.get('__url__')}: {exc!r}; re-run prep"
        ) from exc
    return image_HWC, meta


def pick_captions(captions: list[str], num: int, *, rng: random.Random) -> list[str]:
    """``num`` captions: distinct when there are enough, else every caption once before any repeats."""
    if not captions:
        raise ValueError("sample has no captions: re-run prep (it drops caption-less samples)")
    order = rng.sample(captions, len(captions))
    return [order[i % len(order)] for i in range(num)]


def _shuffled(samples: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle buffer: hold ``size`` samples, emit a random one as each new one arrives."""
    buffer: list[Any] = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        buffer[i], sample = sample, buffer[i]
        yield sample
    rng.shuffle(buffer)
    yield from buffer


def build_train_loader(stream: TrainStream, *, num_workers: int) -> DataLoader:
    """DataLoader over whole batches (``batch_size=None``), in worker order.

    It gets its own generator: a DataLoader otherwise draws its workers' base seed from torch's
    global RNG each time it is iterated, which would shift the RNG state a resumed run restores.
    """
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        in_order=True,  # the round-robin over workers is what makes batches independent of num_workers
        generator=torch.Generator().manual_seed(stream.seed),
        prefetch_factor=2 if num_workers > 0 else None,
    )


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
