"""The training sample order: which rank reads which shard in an epoch, and in what order its samples come.

It depends only on (shard sample counts, seed, rank, world size, lanes), never on how many loader workers
read, so every worker can compute it and read only its part. Per epoch ``e`` (string seeds: ``random.Random``
hashes them with SHA-512, stable across processes and Pythons):

1. **Shards to ranks.** The shard list is shuffled with ``(seed, "shards", e)``; the shard at position ``j``
   goes to rank ``(j + e) % world_size``. Each rank reads ``S // world_size`` or one more of the ``S`` shards
   (whole shards: nobody else reads them this epoch), and which ranks get one more rotates with the epoch.
2. **Lanes.** The rank's shards, in that order, are dealt to ``K = min(lanes, its shard count)`` lanes: lane
   ``l`` reads shards ``l, l + K, ...`` one after another through its own shuffle buffer
   (``(seed, "buffer", e, rank, l)``). A lane's size ``n_l`` is the sum of its shards' sample counts.
3. **Interleave.** The rank's epoch is ``n = sum(n_l)`` positions; the lane labels ``[0] * n_0 + [1] * n_1 +
   ...`` shuffled with ``(seed, "lanes", e, rank)`` say which lane gives the sample at each position. So a
   batch mixes samples of up to ``K`` shards, and every sample of the rank's shards comes once per epoch.

The rank's epochs 0, 1, 2, ... are concatenated and batch ``b`` is positions ``[b * B, (b + 1) * B)``; a batch
can straddle two epochs. Ranks' epochs differ in length by up to a shard, so ranks drift apart by up to a
shard's worth of samples per epoch (each rank still reads exactly its own shards each epoch).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class EpochPlan:
    """One rank's epoch: its shards (indices into the shard list) per lane and the lane of each position."""

    epoch: int
    lanes: list[list[int]]  # lane -> shard indices, in reading order
    lane_sizes: list[int]  # lane -> samples
    labels: list[int]  # position -> lane

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def shards(self) -> list[int]:
        return sorted(i for lane in self.lanes for i in lane)


def rank_shards(num_shards: int, *, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """Indices of the shards ``rank`` reads in ``epoch``, in reading order (step 1)."""
    order = list(range(num_shards))
    random.Random(f"{seed}/shards/{epoch}").shuffle(order)
    return [shard for j, shard in enumerate(order) if (j + epoch) % world_size == rank]


def rank_epoch_size(shard_samples: Sequence[int], *, seed: int, epoch: int, rank: int, world_size: int) -> int:
    """Samples of ``rank`` in ``epoch``, without shuffling the labels (for skipping epochs on resume)."""
    mine = rank_shards(len(shard_samples), seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    return sum(shard_samples[i] for i in mine)


def plan_epoch(shard_samples: Sequence[int], *, seed: int, epoch: int, rank: int, world_size: int,
               lanes: int) -> EpochPlan:
    """Steps 1-3 for one rank and epoch."""
    mine = rank_shards(len(shard_samples), seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    num_lanes = min(lanes, len(mine))
    lane_shards = [mine[lane::num_lanes] for lane in range(num_lanes)]
    lane_sizes = [sum(shard_samples[i] for i in shards) for shards in lane_shards]
    labels = [lane for lane, size in enumerate(lane_sizes) for _ in range(size)]
    random.Random(f"{seed}/lanes/{epoch}/{rank}").shuffle(labels)
    return EpochPlan(epoch, lane_shards, lane_sizes, labels)


def locate(position: int, shard_samples: Sequence[int], *, seed: int, rank: int,
           world_size: int) -> tuple[int, int]:
    """(epoch, offset in it) of a position in the rank's concatenated epochs; earlier epochs are only sized."""
    epoch = 0
    while position >= (size := rank_epoch_size(shard_samples, seed=seed, epoch=epoch, rank=rank,
                                                world_size=world_size)):
        position -= size
        epoch += 1
    return epoch, position


def check_shards(shard_samples: Sequence[int], *, world_size: int, lanes: int) -> None:
    """Every rank needs a shard each epoch, every shard a sample: else the order above is undefined."""
    if len(shard_samples) < world_size:
        raise ValueError(f"the training data has {len(shard_samples)} shard(s) for {world_size} ranks: each rank "
                         "reads whole shards, so it needs at least one per rank; re-run prep with a smaller "
                         "data.samples_per_shard, or train on fewer ranks (cluster.nodes x cluster.tasks_per_node)")
    if min(shard_samples) < 1 or lanes < 1:
        raise ValueError(f"shard sample counts {list(shard_samples)[:5]}... and lanes={lanes}: need every shard "
                         "to hold a sample (the prep manifest lists only non-empty shards) and lanes >= 1")
