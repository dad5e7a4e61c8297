"""Which shards task ``t`` of a ``T``-task prep array writes (``prep_array.py``), and where its input starts.

Shard ``i`` always holds input records ``[i * S, (i + 1) * S)`` (``raw_prep.py``); only who writes it depends
on ``T``. When the input's record count is known before reading it (img2dataset tars, from their headers:
``sources.record_counts``), task ``t`` writes one contiguous block of the shards, ``T`` blocks of equal size
up to one shard, and reads only the tars that hold the block: about ``1/T`` of the input plus the start of
the tar its first record is in. Otherwise (tables, folders, tars on S3 or compressed) task ``t`` writes the
shards ``i % T == t`` and lists the whole input; tables and folders fetch only the task's own images.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskShards:
    task: int
    num_tasks: int
    block: range | None = None  # its shards when the input's size is known up front, else every T-th shard

    def owns(self, index: int) -> bool:
        return index in self.block if self.block is not None else index % self.num_tasks == self.task

    def shard_span(self) -> tuple[int, int | None]:
        """The shards ``[first, stop)`` whose input records the task reads (stop None: to the input's end)."""
        return (self.block.start, self.block.stop) if self.block is not None else (0, None)

def task_shards(task: int, num_tasks: int, *, num_records: int | None, samples_per_shard: int) -> TaskShards:
    """Task ``task`` of ``num_tasks``'s shards; ``num_records``: the input's record count, if known up front."""
    if num_records is None:
        return TaskShards(task, num_tasks)
    num_shards = -(-num_records // samples_per_shard)
    return TaskShards(task, num_tasks, range(task * num_shards // num_tasks, (task + 1) * num_shards // num_tasks))
