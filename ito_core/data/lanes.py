"""One lane of a rank's epoch (``order.py``): its shards read one after another through a shuffle buffer.

The lane also counts the bytes it reads (``Tally``, per epoch) and deals with damaged shards: a missing or
truncated shard (not a complete tar) fails the lane with an error naming it, unless ``max_bad_shards``
(``train.max_bad_shards``) allows skipping it. A skipped shard keeps the samples read before the damage,
and the lane makes up the missing ones so the epoch keeps its length (every rank must take the same number
of steps, and the lanes of other workers must not shift): it makes further passes over the rank's readable
shards of the epoch, its own first (lane l, then l + 1, ...), each through a buffer seeded again. An S3
outage is not a bad shard: the reader retries it, then fails.
"""

from __future__ import annotations

import logging
import random
import tarfile
from collections import Counter
from collections.abc import Iterator
from typing import Any

from ito_core.data.shard_io import iter_shard_samples
from ito_core.storage import MANIFEST

log = logging.getLogger(__name__)

BAD_SHARD_ERRORS = (FileNotFoundError, tarfile.ReadError)  # missing; truncated, empty or not a tar


class Tally:
    """What one reader did since it was last drained: bytes read and bad shards skipped, by epoch."""

    def __init__(self, max_bad_shards: int) -> None:
        self.max_bad_shards = max_bad_shards
        self.bytes: Counter[int] = Counter()
        self.bad: dict[int, dict[str, str]] = {}  # epoch -> url -> problem, over the reader's life
        self._new_bad: list[list[Any]] = []

    def add_bad(self, epoch: int, url: str, problem: str) -> None:
        bad = self.bad.setdefault(epoch, {})
        bad[url] = problem
        self._new_bad.append([epoch, url, problem])
        check_bad_shards(epoch, bad, self.max_bad_shards)
        log.warning("epoch %d: skipping the rest of shard %s (%s); %d/%d bad shards allowed per epoch",
                    epoch, url, problem, len(bad), self.max_bad_shards)

    def drain(self) -> dict[str, Any]:
        out = {"bytes": dict(self.bytes), "bad": self._new_bad}
        self.bytes, self._new_bad = Counter(), []
        return out


def check_bad_shards(epoch: int, bad: dict[str, str], max_bad_shards: int) -> None:
    """Raise once a rank has skipped more bad shards in ``epoch`` than allowed, naming the last one."""
    if len(bad) <= max_bad_shards:
        return
    url, problem = list(bad.items())[-1]
    raise ValueError(
        f"shard {url} is {problem}: {len(bad)} bad shard(s) in epoch {epoch}, more than "
        f"train.max_bad_shards={max_bad_shards}. Skipping shards changes the data the run trains "
        f"on, so it is off by default: restore the shard or re-run prep (delete the data set's {MANIFEST} to "
        "rebuild it), or set train.max_bad_shards to skip that many per epoch")


def lane_samples(urls: list[str], refill_urls: list[str], *, size: int, epoch: int, seed: str,
                 shuffle_buffer: int, tally: Tally) -> Iterator[dict[str, Any]]:
    """The ``size`` raw samples of a lane reading ``urls``; ``refill_urls``: the rank's epoch shards, this lane's
    first, to make up for skipped damage. A lane that holds more or fewer samples than ``size`` without damage
    means the shards changed since prep counted them: that fails."""
    count = 0
    for sample in _shuffled(_readable(urls, epoch, tally), shuffle_buffer, random.Random(seed)):
        count += 1
        yield sample  # a (size + 1)-th one is caught by the reader's end-of-epoch check
    if count == size:
        return
    if not any(url in tally.bad.get(epoch, {}) for url in urls):
        raise ValueError(f"epoch {epoch}: shards {urls[:3]}... gave {count} samples, the prep manifest says "
                         f"{size}: the shards changed or hold too few samples; re-run prep")
    log.warning("epoch %d: a lane lost %d samples to damaged shards; repeating readable ones instead",
                epoch, size - count)
    for refill in range(1, 2**31):
        got = 0
        rng = random.Random(f"{seed}/refill/{refill}")
        for sample in _shuffled(_readable(refill_urls, epoch, tally), shuffle_buffer, rng):
            got, count = got + 1, count + 1
            yield sample
            if count == size:
                return
        if got == 0:
            raise ValueError(f"epoch {epoch}: no readable sample left in this rank's shards ({refill_urls[:3]}...)")


def _readable(urls: list[str], epoch: int, tally: Tally) -> Iterator[dict[str, Any]]:
    """Raw samples of ``urls`` in order, skipping (within the budget) the damaged ones; a shard already known to
    be bad this epoch is not read again."""
    for url in urls:
        if url in tally.bad.get(epoch, {}):
            continue
        try:
            yield from iter_shard_samples([url], on_bytes=lambda n: tally.bytes.update({epoch: n}))
        except BAD_SHARD_ERRORS as err:
            problem = "missing" if isinstance(err, FileNotFoundError) else f"truncated or not a tar ({err.args[0]})"
            tally.add_bad(epoch, url, problem)


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
