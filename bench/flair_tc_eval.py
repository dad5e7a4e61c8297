"""What FLAIR's text-conditioned eval path costs over the CLIP path: time and FLOPs of scoring B_img x B_txt pairs.

Both paths start from the encoded eval set. CLIP: one dot product of global embeddings per pair. Text-conditioned
(``ito_core.eval.text_conditioned.tc_scores``): every image pooled by every candidate text, then one cosine. The
image tower also has to hand out its patch tokens (its last block then computes every row, not just CLS): timed as
"encode images" with and without tokens. Shapes are the embedded eval sets' (random weights: the cost does not
depend on them); the analytic table scales it to ViT-B/16 (196 patches, E = 512) and standard benchmarks.

    python bench/flair_tc_eval.py                              # tiny model, the embedded eval sets' sizes
    python bench/flair_tc_eval.py --model-config vit_b_16 --images 64 --json tc.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import describe, machine  # noqa: E402

from ito_core.config import load_config  # noqa: E402
from ito_core.eval.ranking import best_match_ranks  # noqa: E402
from ito_core.eval.text_conditioned import tc_scores, tc_scoring_flops  # noqa: E402
from ito_core.methods.flair.model import TextConditionedPool  # noqa: E402
from ito_core.models.dual_encoder import DualEncoder  # noqa: E402

QUICK_ARGS = ["--rounds", "2"]
# (eval task, images, candidate texts): eval=embedded's sets at eval.max_samples=2000 (shapes_eval = 1000 images,
# 3 captions each; Fashion-MNIST zero-shot: 10 class queries).
EMBEDDED = [("fashion_mnist zero-shot", 2000, 10), ("shapes retrieval", 1000, 3000)]
# ViT-B/16 (224 px: 196 patches, E = 512) on standard sets: (name, images, texts).
B16_SETS = [("ImageNet-1k zero-shot", 50_000, 1000), ("COCO 5k retrieval", 5000, 25_000),
            ("Flickr30k 1k retrieval", 1000, 5000)]
B16_IMAGE_GF, B16_TEXT_GF = 35.13, 5.96  # forward GFLOPs per sample, ito_core.flops / docs/REFERENCE.md


def best_and_median(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def measure(model: DualEncoder, pool: TextConditionedPool, *, images: int, texts: int, rounds: int,
            batch: int) -> dict[str, float]:
    cfg_size = model.visual.conv1.kernel_size[0] * model.visual.grid_size
    pixels_BCHW = torch.randn(min(batch, images), 3, cfg_size, cfg_size)
    patches = model.visual.grid_size**2
    dim = model.visual.proj.shape[1]
    gen = torch.Generator().manual_seed(0)
    patches_NPE = torch.randn(images, patches, dim, generator=gen)
    images_ND = F.normalize(torch.randn(images, dim, generator=gen), dim=-1)
    texts_TD = F.normalize(torch.randn(texts, dim, generator=gen), dim=-1)
    ids_T = torch.arange(texts) % images

    def clip_scoring() -> None:
        best_match_ranks(texts_TD, query_ids_Q=ids_T, candidates_CD=images_ND, candidate_ids_C=torch.arange(images))
        best_match_ranks(images_ND, query_ids_Q=torch.arange(images), candidates_CD=texts_TD, candidate_ids_C=ids_T)

    with torch.no_grad():
        row = {"images": images, "texts": texts, "patches": patches, "dim": dim}
        steps = -(-images // len(pixels_BCHW))  # image batches of the whole set
        for name, fn in [("encode_images_s", lambda: model.visual(pixels_BCHW)),
                         ("encode_images_with_tokens_s", lambda: model.visual(pixels_BCHW, return_tokens=True))]:
            best, _ = best_and_median(fn, rounds)
            row[name] = best * steps
        row["clip_scoring_s"], row["clip_scoring_median_s"] = best_and_median(clip_scoring, rounds)
        row["tc_scoring_s"], row["tc_scoring_median_s"] = best_and_median(
            lambda: tc_scores(pool, patches_NPE, texts_TD), rounds)
    row.update(tc_scoring_flops(images=images, queries=texts, patches=patches, dim=dim))
    return row


def b16_table() -> list[dict[str, float | str]]:
    rows = []
    for name, images, texts in B16_SETS:
        flops = tc_scoring_flops(images=images, queries=texts, patches=196, dim=512)
        encode = images * B16_IMAGE_GF * 1e9 + texts * B16_TEXT_GF * 1e9
        rows.append({"set": name, "images": images, "texts": texts, **flops, "encode_flops": encode})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="tiny")
    parser.add_argument("--images", type=int, default=0, help="override the image count of every set (0 = as listed)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config([f"model={args.model_config}"])
    torch.manual_seed(0)
    model, pool = DualEncoder(cfg.model).eval(), TextConditionedPool(cfg.model.embed_dim, 8).eval()
    rows = [{"set": name, **measure(model, pool, images=args.images or images, texts=texts, rounds=args.rounds,
                                    batch=cfg.eval.batch_size)} for name, images, texts in EMBEDDED]
    print(f"## FLAIR tc eval cost, model={args.model_config}, {describe(machine())}, {args.threads} thread(s)\n")
    print("| set | images x texts | encode images (s) | + tokens (s) | CLIP scoring (s) | tc scoring (s) "
          "| CLIP GFLOP | tc GFLOP |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['images']} x {r['texts']} | {r['encode_images_s']:.2f} | "
              f"{r['encode_images_with_tokens_s']:.2f} | {r['clip_scoring_s']:.3f} | {r['tc_scoring_s']:.2f} | "
              f"{r['clip_flops'] / 1e9:.3f} | {r['tc_flops'] / 1e9:.1f} |")
    b16 = b16_table()
    print("\n## ViT-B/16 (196 patches, E = 512), analytic\n")
    print("| set | images x texts | CLIP scoring TFLOP | tc scoring TFLOP | encoding both towers TFLOP |")
    print("|---|---|---|---|---|")
    for r in b16:
        print(f"| {r['set']} | {r['images']} x {r['texts']} | {r['clip_flops'] / 1e12:.4f} | "
              f"{r['tc_flops'] / 1e12:.1f} | {r['encode_flops'] / 1e12:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "embedded": rows, "b16": b16}, indent=2))


if __name__ == "__main__":
    main()
