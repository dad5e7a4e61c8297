"""Shard bytes each training rank reads per epoch: the reader before issue 16 vs now, at 2 and 4 ranks.

Before, every rank and every DataLoader worker walked every shard and kept its own samples; now each rank
reads only its whole shards, split between its workers (``ito_core/data/order.py``). Both readers run on
the same shards, one rank at a time (the reader needs no process group), with real DataLoader workers. The
bytes are counted outside the readers: ``open_shard`` is wrapped so every read adds to a per-epoch counter
shared with the worker processes. The old reader is loaded from git (``--before``, a commit before the
change); the new one's own count (``TrainLoader.bytes_read``) must agree with the outside count.

    python bench/loader_bytes.py --shards 16 --samples 1600 --workers 2 --json loader_bytes.json
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import multiprocessing
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine  # noqa: E402

QUICK_ARGS = ["--shards", "8", "--samples", "400"]
EPOCHS = 4  # counters; the readers run 1.5 epochs and epoch 0 is reported
BEFORE = "18c17ca"  # the last commit with the every-rank-reads-every-shard reader


class Counted:
    """A shard stream whose reads add to ``counts[epoch()]`` (a multiprocessing array: workers share it)."""

    def __init__(self, stream: Any, counts: Any, epoch: Any) -> None:
        self.stream, self.counts, self.epoch = stream, counts, epoch

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        with self.counts.get_lock():
            self.counts[min(self.epoch(), EPOCHS - 1)] += len(data)
        return data

    def __enter__(self) -> Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def load_old_loader(commit: str) -> Any:
    source = subprocess.run(["git", "show", f"{commit}:ito_core/data/loader.py"], check=True, capture_output=True,
                            text=True, cwd=Path(__file__).resolve().parents[1]).stdout
    path = Path(tempfile.mkdtemp(prefix="old-loader-")) / "old_loader.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_loader", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_loader"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def tokenize(texts: list[str]) -> Any:
    import torch

    return torch.zeros(len(texts), 8, dtype=torch.long)


def bytes_before(old: Any, paths: list[str], counts: list[int], *, rank: int, world: int, workers: int,
                 batch: int) -> int:
    """Epoch-0 bytes of one rank with the old reader: each worker tracks its epoch in a process global."""
    array = multiprocessing.Array("q", EPOCHS)
    current = {"epoch": 0}
    opener, epoch_samples = old.open_shard, old.TrainStream._epoch_samples

    def epoch_samples_spy(self: Any, epoch: int) -> Any:
        current["epoch"] = epoch
        return epoch_samples(self, epoch)

    old.open_shard = lambda url: Counted(opener(url), array, lambda: current["epoch"])
    old.TrainStream._epoch_samples = epoch_samples_spy
    try:
        stream = old.TrainStream(paths, batch_size=batch, num_texts=1, tokenizer=tokenize, seed=0, rank=rank,
                                 world_size=world, samples_per_epoch=sum(counts))
        per_rank = len(range(rank, sum(counts), world))
        for _ in itertools.islice(old.build_train_loader(stream, num_workers=workers), 3 * per_rank // batch // 2):
            pass
    finally:
        old.open_shard, old.TrainStream._epoch_samples = opener, epoch_samples
    return array[0]


def bytes_after(paths: list[str], counts: list[int], *, rank: int, world: int, workers: int,
                batch: int) -> tuple[int, int, int]:
    """(epoch-0 bytes counted outside, by the reader itself, of the shards order.py assigns) for one rank."""
    from ito_core.data import lanes, shard_io
    from ito_core.data.loader import TrainStream, build_train_loader
    from ito_core.data.order import plan_epoch, rank_shards

    array = multiprocessing.Array("q", EPOCHS)
    opener, lane_samples = shard_io.open_shard, lanes.lane_samples
    current = {"epoch": 0}

    def lane_spy(*args: Any, epoch: int, **kw: Any) -> Any:
        inner = lane_samples(*args, epoch=epoch, **kw)
        while True:
            current["epoch"] = epoch  # a lane reads only its own epoch's shards, and only when pulled
            try:
                sample = next(inner)
            except StopIteration:
                return
            yield sample

    shard_io.open_shard = lambda url: Counted(opener(url), array, lambda: current["epoch"])
    sys.modules["ito_core.data.loader"].lane_samples = lane_spy
    try:
        stream = TrainStream(paths, shard_samples=counts, batch_size=batch, num_texts=1, tokenizer=tokenize,
                             seed=0, rank=rank, world_size=world)
        size = plan_epoch(counts, seed=0, epoch=0, rank=rank, world_size=world, lanes=stream.lanes).size
        loader = build_train_loader(stream, num_workers=workers)
        for _ in itertools.islice(loader, 3 * size // batch // 2):
            pass
    finally:
        shard_io.open_shard = opener
        sys.modules["ito_core.data.loader"].lane_samples = lane_samples
    assigned = rank_shards(len(paths), seed=0, epoch=0, rank=rank, world_size=world)
    return array[0], loader.bytes_read[0], sum(Path(paths[i]).stat().st_size for i in assigned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1600)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--before", default=BEFORE, help="git commit of the old reader")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    from ito_core.data.embedded import shapes_samples
    from ito_core.data.shards import write_shards

    info, old = machine(), load_old_loader(args.before)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-bytes-") as tmp:
        manifest = write_shards(shapes_samples("train", num_samples=args.samples, image_size=64), Path(tmp),
                                image_size=64, samples_per_shard=-(-args.samples // args.shards), jpeg_quality=90)
        paths = [str(Path(tmp) / shard["name"]) for shard in manifest["shards"]]
        counts = [shard["num_samples"] for shard in manifest["shards"]]
        total = sum(Path(p).stat().st_size for p in paths)
        for world in (2, 4):
            for rank in range(world):
                before = bytes_before(old, paths, counts, rank=rank, world=world, workers=args.workers,
                                      batch=args.batch_size)
                outside, own, assigned = bytes_after(paths, counts, rank=rank, world=world, workers=args.workers,
                                                     batch=args.batch_size)
                assert outside == own == assigned, (outside, own, assigned)
                rows.append({"world_size": world, "rank": rank, "before": before, "after": own})
                print(f"world {world} rank {rank}: {before} -> {own} bytes", file=sys.stderr)
    report = {"machine": info, "shards": len(paths), "dataset_bytes": total, "workers": args.workers, "rows": rows}
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def table(report: dict) -> str:
    total = report["dataset_bytes"]
    lines = [f"{describe(report['machine'])}; {report['shards']} shards, {total} bytes in all; "
             f"{report['workers']} DataLoader workers per rank; epoch 0", "",
             "| ranks | rank | bytes read before | x data set | bytes read now | x data set |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['world_size']} | {row['rank']} | {row['before']} | {row['before'] / total:.2f} | "
                     f"{row['after']} | {row['after'] / total:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
