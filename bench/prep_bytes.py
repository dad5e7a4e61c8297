"""Input bytes each task of a ``data=raw`` prep array reads from img2dataset tars, before issue 26 vs now, at 1/2/4
tasks (``ito_core/prep_array.py``).

Before, every task streamed every input tar; now the tasks write contiguous blocks of shards and read only the
tars that hold them, after a walk of every tar's member headers that counts its records. Both versions prep the
same input (``--tars`` tars of ``--samples`` real-photo JPEGs each, every 25th image a byte copy of an earlier
one, so the final step removes copies across tasks) with their tasks run one after another in one process each,
then their final step. The bytes are counted outside the readers: the tar openers of
``ito_core.data.sources.img2dataset`` are wrapped so that every read adds to the running task's count (the
header walk's reads apart). The old code is taken from git (``--before``) into a temporary folder; each side runs
in its own interpreter with that tree first on the path. Every run's manifest must equal the one-task run's, and
the shard files too (their sha256 is in the manifest).

    python bench/prep_bytes.py --tars 8 --samples 50 --json prep_bytes.json
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

if sys.argv[1:2] != ["--side"]:  # a side imports ito_core from the tree on its PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine  # noqa: E402

QUICK_ARGS = ["--tars", "4", "--samples", "10"]
BEFORE = "d7bd195"  # the last commit whose prep array tasks read every input tar
ROOT = Path(__file__).resolve().parents[1]
NO_EVAL = ["eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="]


class Counted:
    """A tar stream whose reads add to ``counter[kind]``."""

    def __init__(self, stream: Any, counter: dict[str, int], kind: str) -> None:
        self.stream, self.counter, self.kind = stream, counter, kind
        counter[f"{kind}_opens"] += 1

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.counter[self.kind] += len(data)
        return data

    def __getattr__(self, name: str) -> Any:  # seek, tell, close, fileno
        return getattr(self.stream, name)

    def __enter__(self) -> Counted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.close()


def write_input(folder: Path, *, tars: int, samples: int) -> int:
    """img2dataset-style tars (``<key>.jpg/.txt/.json``); returns their bytes in all."""
    from photos import make_photos

    photos = make_photos(tars * samples, min_side=200, max_side=400)
    folder.mkdir(parents=True)
    for t in range(tars):
        with tarfile.open(folder / f"{t:05d}.tar", "w") as tar:
            for i in range(t * samples, (t + 1) * samples):
                body = photos[i - 20 if i % 25 == 24 else i]  # a byte copy of an image 20 records earlier
                for ext, data in (("jpg", body), ("txt", f"photo {i}".encode()), ("json", b"{}")):
                    info = tarfile.TarInfo(f"{i:09d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return sum(path.stat().st_size for path in folder.glob("*.tar"))


def run_side(folder: Path, out: Path, num_tasks: int, samples_per_shard: int) -> dict[str, Any]:
    """(In the side's interpreter) the array's tasks one after another, then its final step."""
    from ito_core.artifacts import train_data_key
    from ito_core.config import load_config
    from ito_core.data.sources import img2dataset
    from ito_core.prep_array import finish_array, prep_task
    from ito_core.storage import LocalStore

    cfg = load_config(["data=raw", "data.input_kind=img2dataset", f"data.input={folder}", "data.caption_columns=[txt]",
                       f"storage.root={out}", "data.image_size=64", f"data.samples_per_shard={samples_per_shard}",
                       "data.prep_workers=1", *NO_EVAL])
    store, key = LocalStore(cfg.storage.root), train_data_key(cfg.data)
    counter: dict[str, int] = {}
    openers = {"open_shard": "tars", "open_unbuffered": "headers"}  # the old code has only the first

    for name, kind in openers.items():
        if hasattr(img2dataset, name):
            opener = getattr(img2dataset, name)
            setattr(img2dataset, name, lambda url, _open=opener, _kind=kind: Counted(_open(url), counter, _kind))
    tasks = []
    for task in range(num_tasks):
        counter.clear()
        counter.update({"tars": 0, "tars_opens": 0, "headers": 0, "headers_opens": 0})
        prep_task(cfg.data, store, key, task=task, num_tasks=num_tasks)
        tasks.append(dict(counter))
    return {"tasks": tasks, "manifest": finish_array(cfg.data, store, key, num_tasks=num_tasks)}


def side(tree: Path, folder: Path, out: Path, num_tasks: int, samples_per_shard: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--side", str(folder), str(out), str(num_tasks), str(samples_per_shard)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, env={"PYTHONPATH": str(tree),
                          "PATH": "/usr/bin:/bin", "TQDM_DISABLE": "1"})
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--side"]:
        folder, out, num_tasks, samples_per_shard = sys.argv[2:6]
        print(json.dumps(run_side(Path(folder), Path(out), int(num_tasks), int(samples_per_shard))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tars", type=int, default=8)
    parser.add_argument("--samples", type=int, default=50, help="samples per input tar")
    parser.add_argument("--samples-per-shard", type=int, default=20)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--before", default=BEFORE, help="git commit of the old prep")
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    info = machine()
    with tempfile.TemporaryDirectory(prefix="bench-prep-bytes-") as tmp:
        total = write_input(Path(tmp, "in"), tars=args.tars, samples=args.samples)
        largest = max(path.stat().st_size for path in Path(tmp, "in").glob("*.tar"))
        old = Path(tmp, "old")
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before], check=True, capture_output=True, cwd=ROOT).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        rows, reference = [], None
        for num_tasks in args.tasks:
            runs = {}
            for name, tree in (("before", old), ("after", ROOT)):
                result = side(tree, Path(tmp, "in"), Path(tmp, f"{name}-{num_tasks}"), num_tasks,
                              args.samples_per_shard)
                reference = reference or result["manifest"]
                assert result["manifest"] == reference, f"{name} with {num_tasks} tasks: another manifest"
                runs[name] = result["tasks"]
            for task in range(num_tasks):
                rows.append({"tasks": num_tasks, "task": task, "before": runs["before"][task],
                             "after": runs["after"][task]})
                print(f"{num_tasks} tasks, task {task}: {rows[-1]}", file=sys.stderr)
    report = {"machine": info, "tars": args.tars, "samples_per_tar": args.samples, "input_bytes": total,
              "largest_tar": largest, "samples_per_shard": args.samples_per_shard,
              "num_samples": reference["num_samples"], "rows": rows}
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def table(report: dict) -> str:
    total = report["input_bytes"]
    lines = [f"{describe(report['machine'])}; {report['tars']} img2dataset tars of {report['samples_per_tar']} "
             f"photos, {total} bytes in all (largest tar {report['largest_tar']}); shards of "
             f"{report['samples_per_shard']}; every run's manifest equal to the one-task run's", "",
             "| tasks | task | tar bytes before | x input | tars opened | tar bytes now | x input | tars opened "
             "| + header walk bytes |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        before, after = row["before"], row["after"]
        lines.append(f"| {row['tasks']} | {row['task']} | {before['tars']} | {before['tars'] / total:.2f} | "
                     f"{before['tars_opens']} | {after['tars']} | {after['tars'] / total:.3f} | {after['tars_opens']} "
                     f"| {after['headers']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
