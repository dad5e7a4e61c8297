"""Training data loading per core, M = 1, 2, 4 image views: our loader vs OpenCLIP's webdataset pipeline.

Both sides read the same prep-made shards (256 px centre crops of real photos, ``bench/photos.py``; members
``jpg``, ``txt``, ``json``) in one single-threaded process each, and produce the same thing: per sample M
augmented 224 px views (ITO's recipe: RandomResizedCrop scale (0.5, 1), ColorJitter (0.4, 0.4, 0.4, 0.1)
p 0.8, RandomGrayscale p 0.2, CLIP normalisation) and one tokenized caption, in batches.

- ours: ``TrainStream`` (tar read, decode once, tokenize) + ``MultiViewAugment`` (the M views of the whole
  batch in one kornia call), as ``ito_core.train`` runs them;
- peer: ``open_clip_train.data``'s stages as ``get_wds_dataset`` chains them (``ResampledShards2``,
  ``tarfile_to_samples_nothrow``, ``wds.shuffle``, ``filter_no_caption_or_no_image``, ``wds.batched``) with
  ``open_clip.image_transform(224, is_train=True, aug_cfg=<the recipe>)``; for M views the decode +
  transform stage runs M times per sample (decode per view, as ITO's reference code does). M = 1 is
  exactly OpenCLIP's own pipeline.

Rounds are interleaved (each round times every side at every M); the rate is samples per CPU second of the
process (what "per core" means, and what other processes on a shared machine leave alone), wall time beside.

    python bench/loader.py --samples 512 --batch-size 32 --batches 4 --rounds 5 \\
        --open-clip-python /tmp/ocvenv/bin/python --json loader.json

The peer's venv needs ``webdataset braceexpand pandas`` besides open_clip_torch (``bench/README.md``).
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

QUICK_ARGS = ["--samples", "256", "--batches", "2", "--rounds", "3"]
VIEWS = (1, 2, 4)
IMAGE_SIZE, PREP_SIZE = 224, 256
CAPTIONS = ("a photo of {}", "a picture showing {}", "an image of {}")
SUBJECTS = ("a woman in uniform", "a pagoda by a lake", "a flower in bloom")
PEER, OURS = "OpenCLIP webdataset pipeline (peer)", "ours: TrainStream + MultiViewAugment"

# Worker protocol (stdin -> stdout, one JSON line each): ready -> {}; "run M K" -> {"cpu", "wall", "augment_cpu"}
# for K batches; next_batch(M) returns (views, texts, CPU seconds of it spent making views outside the loader).
WORKER_LOOP = r"""
import json, sys, time

def serve(next_batch):
    print(json.dumps({}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] != "run":
            return
        views, batches = int(cmd[1]), int(cmd[2])
        wall, cpu, augment_cpu = time.perf_counter(), time.process_time(), 0.0
        for _ in range(batches):
            images, texts, seconds = next_batch(views)
            augment_cpu += seconds
        assert images.shape[1:] == (views, 3, IMAGE_SIZE, IMAGE_SIZE), images.shape
        print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
                          "augment_cpu": augment_cpu}), flush=True)
"""

PEER_WORKER = r"""
import io, sys, torch, open_clip, webdataset as wds
from PIL import Image
from open_clip_train.data import (ResampledShards2, SharedEpoch, tarfile_to_samples_nothrow,
                                  filter_no_caption_or_no_image, _SAMPLE_SHUFFLE_SIZE, _SAMPLE_SHUFFLE_INITIAL)
SHARDS, BATCH, IMAGE_SIZE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(1)
recipe = dict(scale=(0.5, 1.0), color_jitter=(0.4, 0.4, 0.4, 0.1), color_jitter_prob=0.8, gray_scale_prob=0.2)
transform = open_clip.image_transform(IMAGE_SIZE, is_train=True, aug_cfg=recipe)
tokenizer = open_clip.get_tokenizer("ViT-B-16")

def pipeline(views):
    def decode_and_augment(sample):  # wds.decode("pilrgb") + map_dict(image=preprocess_img), once per view
        images = [transform(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")) for _ in range(views)]
        return torch.stack(images), tokenizer(sample["txt"].decode("utf-8"))[0]  # wds.batched stacks them
    return iter(wds.DataPipeline(
        ResampledShards2(SHARDS, deterministic=True, epoch=SharedEpoch()), tarfile_to_samples_nothrow,
        wds.shuffle(bufsize=_SAMPLE_SHUFFLE_SIZE, initial=_SAMPLE_SHUFFLE_INITIAL),
        wds.select(filter_no_caption_or_no_image), wds.map(decode_and_augment), wds.batched(BATCH)))

streams = {}
def next_batch(views):
    stream = streams.setdefault(views, pipeline(views))
    return (*next(stream), 0.0)  # its views are made inside the pipeline
""" + WORKER_LOOP + "\nserve(next_batch)\n"


def our_worker(shards: str, batch_size: int) -> None:
    import time

    import torch
    from braceexpand import braceexpand

    from ito_core.data.augment import MultiViewAugment
    from ito_core.data.loader import TrainStream, iter_shard_samples
    from ito_core.data.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    tokenizer = build_tokenizer(77)
    streams, augments = {}, {}
    paths = list(braceexpand(shards))
    counts = [sum(1 for _ in iter_shard_samples([path])) for path in paths]  # the prep manifest's, untimed

    def next_batch(views: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        if views not in streams:
            # Iterated in this process, the stream yields whole batches (one reader holds every lane).
            streams[views] = iter(TrainStream(paths, shard_samples=counts, batch_size=batch_size, num_texts=1,
                                              tokenizer=tokenizer, seed=views, rank=0, world_size=1))
            augments[views] = MultiViewAugment(image_size=IMAGE_SIZE, num_views=views)
        batch = next(streams[views])
        start = time.process_time()
        with torch.no_grad():  # in training this runs on the accelerator, batched (ito_core/train.py)
            views_BMCHW = augments[views](batch["images"])
        return views_BMCHW, batch["texts"], time.process_time() - start

    scope = {"IMAGE_SIZE": IMAGE_SIZE}
    exec(WORKER_LOOP, scope)  # the same timing loop as the peer's
    scope["serve"](next_batch)


def write_shards(out_dir: Path, samples: int, num_shards: int) -> str:
    """Prep-made shards (our transcode: 256 px centre crop, q95); the brace pattern of their paths."""
    import webdataset as wds

    from ito_core.data.transcode import TranscodeOptions, transcode

    opts = TranscodeOptions(image_size=PREP_SIZE)
    photos = make_photos(samples, min_side=400, max_side=900)
    pattern = str(out_dir / "shard-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=-(-samples // num_shards), verbose=0) as writer:
        for i, photo in enumerate(photos):
            reason, jpg = transcode(photo, opts)
            assert not reason, reason
            captions = [template.format(SUBJECTS[i % 3]) for template in CAPTIONS]
            writer.write({"__key__": f"{i:010d}", "jpg": jpg, "txt": captions[0],
                          "json": json.dumps({"captions": captions, "label": -1})})
    return str(out_dir / f"shard-{{000000..{num_shards - 1:06d}}}.tar")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=512, help="samples in the shards")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches timed per side, M and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--open-clip-python", default="", help="python of the OpenCLIP side venv (else no peer)")
    parser.add_argument("--json", default="", help="write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # the shards' brace pattern
    args = parser.parse_args()
    if args.worker:
        return our_worker(args.worker, args.batch_size)

    before = machine()
    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        shards = write_shards(Path(tmp), args.samples, args.shards)
        workers = {OURS: Worker([sys.executable, __file__, "--batch-size", str(args.batch_size), "--worker", shards])}
        if args.open_clip_python:
            workers[PEER] = Worker([args.open_clip_python, "-c", PEER_WORKER, shards, str(args.batch_size),
                                    str(IMAGE_SIZE)])
        runs = {(name, m): [] for name in workers for m in VIEWS}
        for r in range(args.rounds + 1):  # round 0 warms up: shuffle buffers, lazy imports
            for m in VIEWS:
                for name, worker in workers.items():
                    result = worker.ask(f"run {m} {1 if r == 0 else args.batches}")
                    if r:
                        runs[name, m].append(result)
            print(f"round {r}/{args.rounds}", file=sys.stderr)
        for worker in workers.values():
            worker.close()
    report = {"machine": before, "loadavg_1min_after": os.getloadavg()[0], "samples": args.samples,
              "batch_size": args.batch_size, "batches": args.batches, "rounds": args.rounds,
              "rows": summarize(runs, args.batch_size * args.batches)}
    print(table(report))
    print(json.dumps(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


# Rows of the table: (name, side, CPU seconds of a run that count).
ROWS = (
    (PEER, PEER, lambda r: r["cpu"]),
    (f"{OURS}, views on the accelerator (loader CPU only)", OURS, lambda r: r["cpu"] - r["augment_cpu"]),
    (f"{OURS}, views on this CPU (kornia)", OURS, lambda r: r["cpu"]),
)


def summarize(runs: dict[tuple[str, int], list[dict]], samples: int) -> list[dict]:
    rows = []
    for m in VIEWS:
        for name, side, seconds in ROWS:
            if (side, m) not in runs:
                continue
            results = runs[side, m]
            rates = [samples / seconds(r) for r in results]
            row = {"loader": name, "views": m, "best": max(rates), "median": statistics.median(rates),
                   "wall_median": statistics.median(samples / r["wall"] for r in results)}
            if (PEER, m) in runs:
                peer = runs[PEER, m]
                row["vs_peer_best"] = max(rates) / max(samples / p["cpu"] for p in peer)
                row["vs_peer_median"] = statistics.median(p["cpu"] / seconds(r) for r, p in zip(results, peer,
                                                                                                 strict=True))
            rows.append(row)
    return rows


def table(report: dict) -> str:
    lines = [f"{describe(report['machine'])} (after: {report['loadavg_1min_after']:.2f}); 1 thread per loader; "
             f"samples per CPU second; batch {report['batch_size']}, {report['batches']} batches x "
             f"{report['rounds']} rounds; 256 px shards -> 224 px views", "",
             "| M | loader | samples/s/core best (median) | views/s best | vs OpenCLIP best (median per round) | "
             "wall samples/s median (whole run) |", "|---:|---|---:|---:|---:|---:|"]
    for row in report["rows"]:
        ratio = f"{row['vs_peer_best']:.2f}x ({row['vs_peer_median']:.2f}x)" if "vs_peer_best" in row else "-"
        views = "-" if "accelerator" in row["loader"] else f"{row['best'] * row['views']:.0f}"  # not made here
        lines.append(f"| {row['views']} | {row['loader']} | {row['best']:.1f} ({row['median']:.1f}) | {views} | "
                     f"{ratio} | {row['wall_median']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
