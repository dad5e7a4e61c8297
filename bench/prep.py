"""Prep resize throughput per core: our transcode path vs img2dataset's ``Resizer`` on the same real JPEGs.

Each resizer runs in its own single-threaded worker process (ours and a plain-PIL reference under this
python, img2dataset under ``--img2dataset-python``), holding the same input JPEGs in memory: the timing is
decode + checks + resize + centre crop + JPEG encode of every image, no file or network I/O. Rounds are
interleaved (every round times every resizer once), so a busy neighbour slows all of them alike; tables
show the best round and the median, ratios also as the median of per-round ratios.

    python bench/prep.py --count 200 --rounds 5 --img2dataset-python /tmp/i2dvenv/bin/python --json prep.json

Inputs: ``bench/photos.py`` (crops of real photos rescaled to 500-1500 px, quality 90). Output: 256 px
centre crop, quality 95 on every side (img2dataset: ``resize_mode="center_crop"``, its default area /
lanczos interpolation via OpenCV; ours: ``Image.draft`` + bicubic, copy when already the target).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Worker, describe, machine  # noqa: E402
from photos import make_photos  # noqa: E402

QUICK_ARGS = ["--count", "60", "--rounds", "3"]
I2D_PYTHON = "/tmp/i2dvenv/bin/python"  # the side venv of bench/README.md

PEER = "img2dataset 1.47.0 Resizer (peer)"
OURS = "ours: ito_core.data.transcode"
PLAIN = "plain PIL (no draft, bicubic)"

# Worker protocol (stdin -> stdout, one JSON line each): ready -> {"n"}; "run" -> {"t" (CPU s), "wall" (s),
# "out_bytes", "failed"}. CPU time is what "per core" means and what other processes on the machine leave alone.
WORKER_LOOP = r"""
import json, sys, time
from pathlib import Path
images = [p.read_bytes() for p in sorted(Path(IMAGES).glob("*.jpg"))]

def serve(resize):
    print(json.dumps({"n": len(images)}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            return
        out_bytes = failed = 0
        start, cpu = time.perf_counter(), time.process_time()
        for data in images:
            out = resize(data)
            failed += out is None
            out_bytes += len(out or b"")
        print(json.dumps({"wall": time.perf_counter() - start, "t": time.process_time() - cpu,
                          "out_bytes": out_bytes, "failed": failed}), flush=True)
"""

PEER_WORKER = r"""
import io, sys
IMAGES, SIZE, QUALITY = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from img2dataset.resizer import Resizer
resizer = Resizer(image_size=SIZE, resize_mode="center_crop", resize_only_if_bigger=False, encode_quality=QUALITY)

def resize(data):
    img_str, *_, err = resizer(io.BytesIO(data))
    return None if err else img_str
""" + WORKER_LOOP + "\nserve(resize)\n"


def our_worker(kind: str, images: str, size: int, quality: int) -> None:
    import io

    from PIL import Image

    from ito_core.data.transcode import TranscodeOptions, transcode

    opts = TranscodeOptions(image_size=size, resize_mode="center_crop", jpeg_quality=quality)

    def ours(data: bytes) -> bytes | None:
        reason, jpg = transcode(data, opts)
        return None if reason else jpg

    def plain(data: bytes) -> bytes:  # what prep did before: full decode, bicubic, crop, encode
        image = Image.open(io.BytesIO(data)).convert("RGB")
        scale = size / min(image.size)
        resized = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left, top = (resized[0] - size) // 2, (resized[1] - size) // 2
        buffer = io.BytesIO()
        image.crop((left, top, left + size, top + size)).save(buffer, format="JPEG", quality=quality)
        return buffer.getvalue()

    scope = {"IMAGES": images}
    exec(WORKER_LOOP, scope)  # the same timing loop as the peer's
    scope["serve"](ours if kind == "ours" else plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="input JPEGs")
    parser.add_argument("--min-side", type=int, default=500, help="input longer side, smallest (px)")
    parser.add_argument("--max-side", type=int, default=1500, help="input longer side, largest (px)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--img2dataset-python", default=I2D_PYTHON if Path(I2D_PYTHON).exists() else "",
                        help=f"python of a venv with img2dataset==1.47.0 (default {I2D_PYTHON} if present)")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--worker", choices=("ours", "plain"), help=argparse.SUPPRESS)
    parser.add_argument("--images", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return our_worker(args.worker, args.images, args.image_size, args.quality)

    before = machine()
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as images:
        photos = make_photos(args.count, min_side=args.min_side, max_side=args.max_side)
        for i, photo in enumerate(photos):
            Path(images, f"{i:05d}.jpg").write_bytes(photo)
        argv = [sys.executable, __file__, "--images", images, "--image-size", str(args.image_size),
                "--quality", str(args.quality), "--worker"]
        workers = {OURS: Worker([*argv, "ours"]), PLAIN: Worker([*argv, "plain"])}
        if args.img2dataset_python:
            workers[PEER] = Worker([args.img2dataset_python, "-c", PEER_WORKER, images, str(args.image_size),
                                    str(args.quality)], env={"NO_ALBUMENTATIONS_UPDATE": "1"})
        runs: dict[str, list[dict]] = {name: [] for name in workers}
        for r in range(args.rounds + 1):  # round 0 warms up (page cache, lazy imports)
            for name, worker in workers.items():
                result = worker.ask("run")
                if r:
                    runs[name].append(result)
            print(f"round {r}/{args.rounds}", file=sys.stderr)
        for worker in workers.values():
            worker.close()
    rows = summarize(runs, args.count)
    report = {"machine": before, "loadavg_1min_after": os.getloadavg()[0], "count": args.count,
              "input_kb_mean": sum(map(len, photos)) / len(photos) / 1024, "rounds": args.rounds,
              "longer_side": [args.min_side, args.max_side],
              "image_size": args.image_size, "quality": args.quality, "rows": rows}
    print(table(report))
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def summarize(runs: dict[str, list[dict]], count: int) -> dict[str, dict]:
    rows = {}
    for name, results in runs.items():
        rates = [count / r["t"] for r in results]
        rows[name] = {"best": max(rates), "median": statistics.median(rates), "failed": results[0]["failed"],
                      "out_kb": results[0]["out_bytes"] / count / 1024}
        if PEER in runs:
            per_round = [rate * peer["t"] / count for rate, peer in zip(rates, runs[PEER], strict=True)]
            rows[name] |= {"vs_peer_best": max(rates) / max(count / p["t"] for p in runs[PEER]),
                           "vs_peer_median": statistics.median(per_round)}
    return rows


def table(report: dict) -> str:
    lines = [f"{describe(report['machine'])} (after: {report['loadavg_1min_after']:.2f}); 1 thread per resizer, "
             f"img/s per CPU second; {report['count']} JPEGs, longer side {report['longer_side'][0]}-"
             f"{report['longer_side'][1]} px ({report['input_kb_mean']:.0f} KB mean) -> "
             f"{report['image_size']} px q{report['quality']}", "",
             "| resizer | img/s/core best (median) | ms/img best | vs img2dataset best (median per round) | "
             "output KB/img | failed |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in report["rows"].items():
        ratio = f"{row['vs_peer_best']:.2f}x ({row['vs_peer_median']:.2f}x)" if "vs_peer_best" in row else "-"
        lines.append(f"| {name} | {row['best']:.1f} ({row['median']:.1f}) | {1000 / row['best']:.2f} | {ratio} | "
                     f"{row['out_kb']:.1f} | {row['failed']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
