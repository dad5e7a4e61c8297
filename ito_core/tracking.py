"""W&B tracking from rank 0 (online, offline, or disabled by ``wandb.mode``).

The W&B run id is derived from the run key, so a requeued or resumed job continues the same
W&B run instead of starting a new one, with nothing extra to checkpoint. A resumed job must log
each step once: W&B refuses a step below the run's current one (online) and keeps a step twice in
its offline files. So the tracker starts from the last step W&B really holds: the resumed run's
``starting_step`` online; offline, the last step in the run's ``.wandb`` files on disk (a killed
process loses what W&B had not flushed yet, so what was *sent* is no guide). The rows the
checkpoint holds (``catch_up``) fill in steps W&B lost; the steps after it are replayed by training.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ito_core.config import RunConfig, as_dict, config_hash

# W&B's offline run log: a 7-byte header (":W&B", magic, version), then LevelDB log blocks of records
# (checksum, length, type), each a serialized ``Record`` protobuf, split over blocks when long.
FILE_HEADER, BLOCK, RECORD_HEADER = 7, 32768, 7
FULL, LAST = 1, 4


def wandb_run_id(run_key: str) -> str:
    return config_hash(run_key)


def offline_records(path: Path) -> Iterator[Any]:
    """The ``Record`` protobufs of a ``.wandb`` file, up to where its writer stopped."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks = path.read_bytes(), FILE_HEADER, b""
    while pos + RECORD_HEADER <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER:  # a block's tail too short for a record header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos:pos + RECORD_HEADER])
        if kind == 0 or pos + RECORD_HEADER + length > len(data):  # zero fill or a torn tail: the end
            break
        chunks += data[pos + RECORD_HEADER:pos + RECORD_HEADER + length]
        pos += RECORD_HEADER + length
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            chunks = b""
            yield record


def offline_steps(directory: Path, run_id: str) -> list[int]:
    """Every history step of run ``run_id`` in the offline files under ``directory``, oldest start first."""
    files = sorted(directory.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"))
    return [r.history.step.num for path in files for r in offline_records(path)
            if r.WhichOneof("record_type") == "history"]


class Tracker:
    def __init__(self, cfg: RunConfig, *, run_key: str, rank: int, directory: Path) -> None:
        self.run, self.logged = None, 0
        if rank != 0 or cfg.wandb.mode == "disabled":
            return
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        run_id = wandb_run_id(run_key)
        on_disk = offline_steps(directory, run_id) if cfg.wandb.mode == "offline" else []
        self.run = wandb.init(project=cfg.wandb.project, mode=cfg.wandb.mode, id=run_id,
                              name=run_key.rsplit("/", 1)[-1], group=cfg.wandb.group or None, resume="allow",
                              dir=str(directory), config=as_dict(cfg), settings=wandb.Settings(silent=True))
        self.logged = max([*on_disk, self.run.starting_step - 1, 0])

    def catch_up(self, history: list[dict[str, Any]]) -> None:
        """Log the rows a resumed run restored from its checkpoint that W&B does not hold."""
        for row in history:
            self.log(row)

    def log(self, row: dict[str, Any]) -> None:
        if self.run is None or row["step"] <= self.logged:  # W&B holds this step from before a resume
            return
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        self.logged = row["step"]

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
