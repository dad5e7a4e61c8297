"""bench/train_step.py's figures from its measured step times: per-model step time, samples/s, MFU against the
analytic FLOP count, memory, and the ratios its goals are stated in; and the markdown tables. Pure arithmetic on
what the rounds measured (tests/unit/bench/test_step_report.py feeds it made-up timings)."""

from __future__ import annotations

import argparse
import statistics

from ito_core.config import load_config
from ito_core.flops import forward_flops_per_sample, train_flops_per_sample
from ito_core.methods import registry

PEER = "OpenCLIP CLIP (peer)"
BASELINE = "CLIP baseline"
# name -> config overrides (on top of model=...); the peer mirrors the CLIP baseline.
VARIANTS = {
    BASELINE: ["ito=clip"],
    "ITO M=2 fusion": ["ito=ito"],
    "ITO M=2 no fusion": ["ito=ito", "ito.fusion=none", "ito.fusion_weight=0"],
    "ITO M=4 fusion": ["ito=ito", "ito.images=4"],
    "ITO fusion pool4": ["ito=ito", "ito.fusion_image_tokens=pool4"],
    "ITO fusion cls": ["ito=ito", "ito.fusion_image_tokens=cls"],
    # Cheaper views (configs/ablation/ito_cheap_views.yaml), on the cls fusion; the 112 px second view needs a
    # model of at least 112 px (vit_b_16).
    "ITO cls patch dropout 0.5": ["ito=ito", "ito.fusion_image_tokens=cls", "ito.patch_dropout=0.5"],
    "ITO cls 112px second view": ["ito=ito", "ito.fusion_image_tokens=cls", "ito.second_view_size=112"],
    "ITO cls dropout 0.5 + 112px": ["ito=ito", "ito.fusion_image_tokens=cls", "ito.patch_dropout=0.5",
                                    "ito.second_view_size=112"],
    # The methods as experiment=method_comparison trains them (its SLIP head is scaled to the model: see there).
    "SigLIP": ["experiment=method_comparison", "method=siglip"],
    "SLIP": ["experiment=method_comparison", "method=slip"],
    "FLAIR": ["experiment=method_comparison", "method=flair"],
    "OneR": ["experiment=method_comparison", "method=oner"],
    "ITO": ["experiment=method_comparison", "method=ito"],
}
# --variants: the models timed together (the CLIP baseline first: every ratio is against it).
VARIANT_SETS = {
    "ito": [BASELINE, "ITO M=2 fusion", "ITO M=2 no fusion", "ITO M=4 fusion"],
    "fusion": [BASELINE, "ITO M=2 no fusion", "ITO M=2 fusion", "ITO fusion pool4", "ITO fusion cls"],
    "methods": [BASELINE, "SigLIP", "SLIP", "FLAIR", "OneR", "ITO"],
    "views": [BASELINE, "ITO fusion cls", "ITO cls patch dropout 0.5", "ITO cls 112px second view",
              "ITO cls dropout 0.5 + 112px"],
}

def analytic_flops(name: str, model_config: str, text_tokens: int) -> tuple[float, dict[str, float]] | None:
    """(training FLOPs, forward FLOPs by part) of one sample of model ``name`` at ``text_tokens`` per caption, or None
    for a method ``ito_core.flops`` does not count."""
    cfg = load_config([f"model={model_config}", *VARIANTS.get(name, VARIANTS[BASELINE])])
    if registry.get(cfg.method.name).flops_uncounted:  # ito_core.flops leaves part of it out: report counted FLOPs
        return None
    counted = {"text_tokens": text_tokens, "one_row_last_blocks": name != PEER}  # OpenCLIP computes every row
    model, ito = cfg.model, cfg.ito
    return train_flops_per_sample(model, ito, **counted), forward_flops_per_sample(model, ito, **counted)


def summarize(args: argparse.Namespace, times: dict, extra: dict, peak: float) -> dict:
    """Per-model figures and the ratios the goals are stated in."""
    models = {}
    for name, ts in times.items():
        e = extra[name]
        analytic = analytic_flops(name, args.model_config, e["text_tokens"])
        flops = e["flops"] if analytic is None else analytic[0]
        best, median = min(ts), statistics.median(ts)
        models[name] = {"params": e["params"], "text_tokens": e["text_tokens"], "step_s_best": best,
                        "step_s_median": median, "samples_per_s_best": args.batch_size / best,
                        "samples_per_s_median": args.batch_size / median,
                        "train_gflop_per_sample": flops / 1e9,
                        "counted_train_gflop_per_sample": e["flops"] / 1e9,
                        "analytic_over_counted": None if analytic is None else flops / e["flops"],
                        "mfu_best": flops * args.batch_size / best / peak,
                        "mfu_median": flops * args.batch_size / median / peak,
                        "peak_rss_mb": e["peak_rss_mb"], "step_rss_mb": e["peak_rss_mb"] - e["ready_rss_mb"],
                        "first_loss": e["first_loss"], "torch": e["torch"]}
        if args.device == "cuda":
            models[name]["peak_gpu_mb"] = max(e["peak_gpu_mb"])
            models[name]["step_gpu_mb"] = max(e["peak_gpu_mb"]) - e["ready_gpu_mb"]
        if "max_batch" in e:
            models[name]["max_micro_batch"] = e["max_batch"]["max_batch"]
            models[name]["max_batch_capped"] = e["max_batch"]["capped"]  # no OOM up to the limit
            models[name]["max_batch_tries"] = e["max_batch"]["tries"]

    def ratio(num: str, den: str) -> dict:
        per_round = [a / b for a, b in zip(times[num], times[den], strict=True)]
        flop_ratio = models[num]["train_gflop_per_sample"] / models[den]["train_gflop_per_sample"]
        return {"best": min(times[num]) / min(times[den]), "median_per_round": statistics.median(per_round),
                "analytic_flop_ratio": flop_ratio}

    if set(times) >= {"ITO M=2 fusion", "ITO M=4 fusion", "ITO M=2 no fusion"}:  # --variants ito
        ratios = {"ITO M=2 fusion / CLIP baseline (step time; goal <= 1.9)": ratio("ITO M=2 fusion", BASELINE),
                  "ITO M=4 fusion / CLIP baseline (step time)": ratio("ITO M=4 fusion", BASELINE),
                  "ITO M=2 fusion / ITO M=2 no fusion (step time; goal <= 1.05)": ratio("ITO M=2 fusion",
                                                                                         "ITO M=2 no fusion")}
    else:
        ratios = {f"{name} / CLIP baseline (step time)": ratio(name, BASELINE) for name in times
                  if name not in (BASELINE, PEER)}
        if "ITO M=2 no fusion" in times:
            ratios |= {f"{name} / ITO M=2 no fusion (step time; goal <= 1.05)": ratio(name, "ITO M=2 no fusion")
                       for name in times if name.startswith("ITO") and "no fusion" not in name}
    if PEER in times:
        # samples/s ratio = inverse step-time ratio (same batch)
        r = ratio(PEER, BASELINE)
        ratios["CLIP baseline / OpenCLIP (samples/s; goal >= 1.3 on GPU)"] = r
        ratios["ITO M=2 fusion / OpenCLIP (step time)"] = ratio("ITO M=2 fusion", PEER)
    result = {"models": models, "ratios": ratios}
    if args.profile:
        analytic = analytic_flops(args.profile, args.model_config, extra[args.profile]["text_tokens"])
        parts = {} if analytic is None else analytic[1]
        result["profile"] = {"model": args.profile, **extra[args.profile]["profile"],
                             "flop_shares": {k: v / parts["total"] for k, v in parts.items() if k != "total"}}
    return result


def print_table(result: dict) -> None:
    print(f"\n{result['machine']}\n")
    models = result["models"]
    gpu = result["device"] == "cuda"
    mem = "GPU" if gpu else "RSS"
    max_batch = any("max_micro_batch" in m for m in models.values())
    print("| model | params | text tokens | step ms best (median) | samples/s best (median) | vs CLIP step time | "
          f"train GFLOP/sample (counted) | analytic / counted | MFU best (median) | peak {mem} MB | step {mem} MB | "
          f"first loss |{' max micro-batch |' * max_batch}")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * max_batch)
    base = models[BASELINE]
    for name, m in models.items():
        peak_mb, step_mb = (m["peak_gpu_mb"], m["step_gpu_mb"]) if gpu else (m["peak_rss_mb"], m["step_rss_mb"])
        most = f" {m['max_micro_batch']}{'+' * m['max_batch_capped']} |" if max_batch else ""
        print(f"| {name} | {m['params']:,} | {m['text_tokens']} | "
              f"{1e3 * m['step_s_best']:.1f} ({1e3 * m['step_s_median']:.1f}) | "
              f"{m['samples_per_s_best']:.1f} ({m['samples_per_s_median']:.1f}) | "
              f"{m['step_s_best'] / base['step_s_best']:.3f}x | "
              f"{m['train_gflop_per_sample']:.4g} ({m['counted_train_gflop_per_sample']:.4g}) | "
              f"{'n/a' if m['analytic_over_counted'] is None else format(m['analytic_over_counted'], '.4f')} | "
              f"{100 * m['mfu_best']:.1f} % ({100 * m['mfu_median']:.1f} %) | {peak_mb:.0f} | {step_mb:.0f} | "
              f"{m['first_loss']:.4f} |{most}")
    print("\n| ratio | best-of-N | median of per-round | analytic FLOP ratio |\n|---|---:|---:|---:|")
    for name, r in result["ratios"].items():
        print(f"| {name} | {r['best']:.3f} | {r['median_per_round']:.3f} | {r['analytic_flop_ratio']:.3f} |")
    if "profile" in result:
        prof = result["profile"]
        shares = ", ".join(f"{part} {100 * share:.1f} %" for part, share in prof["flop_shares"].items())
        print(f"\nProfile of one {prof['model']} step ({prof['total_ms']:.0f} ms of {prof['clock']} time in ops; "
              f"analytic forward FLOPs: {shares})\n\n| op | self {prof['clock']} ms | share | calls |\n"
              "|---|---:|---:|---:|")
        for row in prof["profile"]:
            print(f"| `{row['op']}` | {row['self_ms']:.1f} | {100 * row['share']:.1f} % | {row['calls']} |")
