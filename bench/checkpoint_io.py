"""Checkpoint save and load against a real S3 server (rclone serve s3 on loopback): before vs now, same run.

The checkpoint has the files and sizes DeepSpeed writes for ViT-B/16 (149.6 M parameters) under ZeRO-2 with bf16
weights at 2 nodes x 8 ranks: one model file (bf16 weights, 299 MB) and 16 optimizer shards (fp32 master weights +
Adam's two moments, 1/16 each: 112 MB). The bytes are random (transfers do not look at them).

- save: one node uploads the files its 8 ranks wrote (the model file + 8 shards, 1.2 GB).
  before: one file after another, boto3's default transfer settings (what ``S3Store.upload_dir`` did);
  now: ``S3Store.upload_dir`` (``FILES_AT_ONCE`` files at once, each in parallel parts).
- load: one node fetches the tag to resume at the same world size.
  before: every file, one after another (2.1 GB); now: ``S3Store.download_dir`` with the node's ``needed_by``
  filter (the model file + its ranks' 8 shards, 1.2 GB), several at once.

Both sides run in this process, interleaved round by round; best and median of the rounds are reported. On this
machine the S3 server shares the 2 cores with the client and "node-local scratch" is the same disk as the shared
work dir, so the figure shows what concurrency and fetching less buy, not what a real parallel filesystem costs.

    python bench/checkpoint_io.py [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import describe, machine  # noqa: E402

PARAMS, RANKS_PER_NODE, NODES = 149_620_737, 8, 2  # ViT-B/16 (OpenCLIP's count)
MB = 1 << 20


def checkpoint_files(scale: float) -> dict[str, int]:
    """name -> size in bytes of one ZeRO-2 bf16 tag written by NODES x RANKS_PER_NODE ranks."""
    world = NODES * RANKS_PER_NODE
    files = {"mp_rank_00_model_states.pt": int(PARAMS * 2 * scale)}
    for rank in range(world):
        files[f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"] = int(PARAMS * 12 / world * scale)
    return files


def write_files(folder: Path, files: dict[str, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(8 * MB)
    for name, size in files.items():
        with open(folder / name, "wb") as out:
            for start in range(0, size, len(block)):
                out.write(block[:min(len(block), size - start)])


def serial_upload(client, folder: Path, bucket: str, prefix: str) -> None:  # noqa: ANN001 - a boto3 client
    """The old ``upload_dir``: one file after another, boto3's default transfer settings."""
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")


def serial_download(client, bucket: str, prefix: str, folder: Path) -> None:  # noqa: ANN001
    """The old ``download_dir``: every object of the tag, one after another."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/")
    for item in listing.get("Contents", []):
        client.download_file(bucket, item["Key"], str(folder / item["Key"].rsplit("/", 1)[1]))


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="file sizes x this (tests use a small scale)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    from fixtures.s3_server import running_s3_server

    from ito_core.checkpoint import needed_by
    from ito_core.storage import S3Store

    files = checkpoint_files(args.scale)
    node0 = {name for name in files if needed_by(set(range(RANKS_PER_NODE)))(name)}
    with tempfile.TemporaryDirectory(prefix="ckpt-io-") as tmp:
        root = Path(tmp)
        (root / "s3").mkdir()
        with running_s3_server(root / "s3") as server:
            os.environ.update(AWS_ACCESS_KEY_ID=server.key, AWS_SECRET_ACCESS_KEY=server.secret,
                              AWS_DEFAULT_REGION="us-east-1")
            bucket = server.new_bucket("ckpt-io")
            store = S3Store(f"s3://{bucket}", endpoint_url=server.endpoint_url)
            write_files(root / "node0", {name: files[name] for name in node0})
            write_files(root / "other", {name: size for name, size in files.items() if name not in node0})
            # Each side keeps its own copy of the tag: a ranged GET of an object that went up in one PUT fails its
            # checksum on some S3-compatible servers (rclone), so each side reads what it wrote itself.
            serial_upload(store.client, root / "other", bucket, "before")  # the other node's shards, for the loads
            store.upload_dir(root / "other", "now")
            rounds: dict[str, list[float]] = {"save_before": [], "save_now": [], "load_before": [], "load_now": []}
            for _ in range(args.rounds):
                rounds["save_before"].append(timed(lambda: serial_upload(store.client, root / "node0", bucket,
                                                                         "before")))
                rounds["save_now"].append(timed(lambda: store.upload_dir(root / "node0", "now")))
                rounds["load_before"].append(timed(lambda: serial_download(store.client, bucket, "before",
                                                                           root / "load_before")))
                rounds["load_now"].append(timed(lambda: store.download_dir(
                    "now", root / "load_now", include=needed_by(set(range(RANKS_PER_NODE))))))
            fetched_now = sum(p.stat().st_size for p in (root / "load_now").iterdir())
    report = {"machine": machine(), "scale": args.scale, "files": len(files),
              "tag_mb": sum(files.values()) / MB, "node_upload_mb": sum(files[n] for n in node0) / MB,
              "node_fetch_mb_before": sum(files.values()) / MB, "node_fetch_mb_now": fetched_now / MB,
              "seconds": {k: {"best": min(v), "median": statistics.median(v), "all": v} for k, v in rounds.items()}}
    for what in ("save", "load"):
        before, now = rounds[f"{what}_before"], rounds[f"{what}_now"]
        ratios = [b / n for b, n in zip(before, now, strict=True)]
        report[f"{what}_speedup"] = {"best": min(before) / min(now), "median_of_rounds": statistics.median(ratios)}
    print(f"machine: {describe(report['machine'])}")
    print(f"tag {report['tag_mb']:.0f} MB in {len(files)} files; one node uploads {report['node_upload_mb']:.0f} MB, "
          f"fetches {report['node_fetch_mb_before']:.0f} MB before / {report['node_fetch_mb_now']:.0f} MB now")
    for what in ("save", "load"):
        s = report["seconds"]
        print(f"{what}: before {s[f'{what}_before']['best']:.2f} s, now {s[f'{what}_now']['best']:.2f} s (best of "
              f"{args.rounds}); speed-up {report[f'{what}_speedup']['best']:.2f}x "
              f"(median of rounds {report[f'{what}_speedup']['median_of_rounds']:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
