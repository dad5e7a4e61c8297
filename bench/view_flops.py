"""Training FLOPs of ITO's cheaper views against CLIP's: the analytic count (``ito_core.flops``, the one ``ito-sweep
plan`` and the logged MFU use) of ITO M=2 with the cls fusion under ``ito.patch_dropout`` and ``ito.second_view_size``,
as a ratio to the CLIP baseline's, and whether it meets issue 26's goal (<= 1.1x). Arithmetic on the configs: no
model is built, nothing is timed (bench/train_step.py --variants views times them).

    python bench/view_flops.py --model-config vit_b_16 --text-tokens 77,24
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ito_core.config import load_config
from ito_core.flops import train_flops_per_sample

GOAL = 1.1  # ITO / CLIP training FLOPs (issue 26)
CLIP = ["ito=clip"]
ITO_CLS = ["ito=ito", "ito.fusion_image_tokens=cls"]
ARMS = {
    "ITO cls, full views": [],
    "patch_dropout=0.25": ["ito.patch_dropout=0.25"],
    "patch_dropout=0.5 (ablation=ito_cheap_views)": ["ablation=ito_cheap_views"],
    "patch_dropout=0.75": ["ito.patch_dropout=0.75"],
    "second_view_size=160": ["ito.second_view_size=160"],
    "second_view_size=112": ["ito.second_view_size=112"],
    "second_view_size=96": ["ito.second_view_size=96"],
    "patch_dropout=0.25 + second_view_size=112": ["ito.patch_dropout=0.25", "ito.second_view_size=112"],
    "patch_dropout=0.5 + second_view_size=112": ["ito.patch_dropout=0.5", "ito.second_view_size=112"],
}


def ratios(model_config: str, text_tokens: list[int]) -> dict[str, dict[int, dict[str, float]]]:
    """arm -> text tokens (0 = the whole context) -> its training GFLOP per sample and its ratio to CLIP's."""
    def flops(overrides: list[str]) -> dict[int, float]:
        cfg = load_config([f"model={model_config}", *overrides])
        return {t: train_flops_per_sample(cfg.model, cfg.ito, text_tokens=t or None) for t in text_tokens}

    clip = flops(CLIP)
    out = {"CLIP baseline": {t: {"gflop": clip[t] / 1e9, "ratio": 1.0} for t in text_tokens}}
    for arm, overrides in ARMS.items():
        arm_flops = flops([*ITO_CLS, *overrides])
        out[arm] = {t: {"gflop": arm_flops[t] / 1e9, "ratio": arm_flops[t] / clip[t]} for t in text_tokens}
    return out


def print_table(table: dict, text_tokens: list[int], context: int) -> None:
    names = [str(t or context) for t in text_tokens]
    print("| arm | " + " | ".join(f"GFLOP/sample, {n} text tokens | vs CLIP | <= {GOAL}x" for n in names) + " |")
    print("|---|" + "---:|---:|:-:|" * len(names))
    for arm, by_tokens in table.items():
        cells = [f"{by_tokens[t]['gflop']:.2f} | {by_tokens[t]['ratio']:.3f}x | "
                 f"{'yes' if by_tokens[t]['ratio'] <= GOAL else 'no'}" for t in text_tokens]
        print(f"| {arm} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-config", default="vit_b_16", help="configs/model/<name>.yaml (>= 160 px)")
    parser.add_argument("--text-tokens", default="0",
                        help="comma-separated tokens per caption to count at; 0 = the whole context, as ito-sweep plan")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    text_tokens = [int(t) for t in args.text_tokens.split(",")]
    table = ratios(args.model_config, text_tokens)
    print_table(table, text_tokens, load_config([f"model={args.model_config}", *CLIP]).model.context_length)
    if args.json:
        args.json.write_text(json.dumps({"model_config": args.model_config, "goal": GOAL, "arms": table}, indent=2))


if __name__ == "__main__":
    main()
