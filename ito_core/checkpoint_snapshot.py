"""Checkpoint files written off the training's critical path, the way DeepSpeed's decoupled checkpointing and
``torch.distributed.checkpoint.async_save`` do it.

DeepSpeed's ``save_checkpoint`` hands each file's state to its checkpoint engine's ``save``. This engine only takes
a snapshot there: a copy of every tensor in host memory (the device-to-host copy on a GPU, a clone on the CPU) and of
everything else, a true copy since training updates the weights and the optimizer state in place right after. The
files are written later, from the snapshot, by ``CheckpointSaver`` on a background thread, through the engine
DeepSpeed built (same format, same loader). The cost: host memory for one copy of the rank's checkpoint state while
it is written (``CheckpointSaver`` keeps at most one in flight).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointCommitInfo, CheckpointEngine


@dataclass
class Snapshot:
    """One tag's files of this rank, held in host memory until ``write``."""

    files: list[tuple[Any, str]] = field(default_factory=list)  # (state, path) in DeepSpeed's save order
    nbytes: int = 0  # bytes of tensor data held

    def write(self, engine: CheckpointEngine) -> None:
        for state, path in self.files:
            engine.save(state, path)


class SnapshotCheckpointEngine(CheckpointEngine):
    """Wraps the engine DeepSpeed built: ``save`` keeps a copy of the state for ``take``; the rest is the wrapped
    engine's (the loads, folders and commits)."""

    def __init__(self, inner: CheckpointEngine) -> None:
        super().__init__()
        self.inner, self.name = inner, f"snapshot of {inner.name}"
        self._taken = Snapshot()

    def save(self, state_dict: Any, path: str) -> None:
        state, nbytes = copy_to_host(state_dict)
        self._taken.files.append((state, path))
        self._taken.nbytes += nbytes

    def take(self) -> Snapshot:
        """The files saved since the last ``take``."""
        taken, self._taken = self._taken, Snapshot()
        return taken

    def preserves_storage_sharing(self) -> bool:
        return False  # DeepSpeed need not clone first: ``save`` copies every tensor on its own

    def create(self, info: CheckpointCommitInfo) -> None:
        self.inner.create(info)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.inner.makedirs(path, exist_ok=exist_ok)

    def load(self, path: str, map_location: Any = None) -> Any:
        return self.inner.load(path, map_location=map_location)

    def commit(self, info: CheckpointCommitInfo) -> Any:
        return self.inner.commit(info)


def copy_to_host(item: Any) -> tuple[Any, int]:
    """A copy of ``item`` sharing no memory with it, every tensor in host memory; and the tensors' bytes.
    A tensor copies only its own elements, not the whole buffer it may view (ZeRO's flat partitions)."""
    if torch.is_tensor(item):
        host = item.detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
        return host, host.numel() * host.element_size()
    if isinstance(item, dict):
        out, nbytes = copy.copy(item), 0  # keeps the mapping's type (an OrderedDict stays one)
        for key, value in item.items():
            out[key], n = copy_to_host(value)
            nbytes += n
        return out, nbytes
    if type(item) in (list, tuple):
        copies = [copy_to_host(value) for value in item]
        return type(item)(value for value, _ in copies), sum(n for _, n in copies)
    return copy.deepcopy(item), 0
