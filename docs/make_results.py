"""Rebuild docs/RESULTS.md's tables from finished sweeps: mean ± std over seeds of the committed eval records.

    python docs/make_results.py ablation <storage root> docs/results   # experiment=ito_ablation's arms
    python docs/make_results.py methods <storage root> docs/results    # experiment=method_comparison

A run is named from its saved ``config.json``: its ablation arm (the ``ito`` settings and steps of one of
``configs/ablation/``), or its method, with "equal compute" when it trained for other steps than the experiment's.
Eval records are the ones the sweep's eval stage committed (same eval sets for every run of a sweep); a UMAP plot per
arm (seed 0) is copied beside the table when the eval stage drew one.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from ito_core.artifacts import ITO_FAMILY
from ito_core.config import as_dict, load_config
from ito_core.eval.suite import summary_metrics
from ito_core.storage import MANIFEST

METRICS = {"final_align_loss": "final align loss", "fashion_mnist/acc1": "ZS acc1",
           "fashion_mnist/lp_acc1": "LP acc1", "shapes/image_retrieval_recall@1": "T→I R@1",
           "shapes/text_retrieval_recall@1": "I→T R@1", "shapes/image_retrieval_recall@5": "T→I R@5",
           "shapes/centroid_distance": "gap (centroid dist)", "shapes/matched_pair_cosine": "matched cos",
           "shapes/random_pair_cosine": "random cos"}
# FLAIR's own eval path (text-conditioned pooling), beside its CLIP-style scores.
TC_METRICS = {"fashion_mnist/tc_acc1": "ZS acc1 (tc)", "shapes/tc_image_retrieval_recall@1": "T→I R@1 (tc)",
              "shapes/tc_text_retrieval_recall@1": "I→T R@1 (tc)"}
ABLATION_ARMS = ("clip", "multi_align", "ito", "ito_m4", "ito_mean", "ito_lambda05", "ito_lambda4",
                 "clip_equal_compute", "ito_detached", "ito_n2", "ito_n2_supcon", "ito_fusion_cls", "ito_fusion_pool4")
METHODS = ("clip", "siglip", "slip", "flair", "oner", "ito")
STEPS = 300  # experiment=method_comparison's train.steps: a method run at other steps is its equal-compute arm
ITO_KEYS = ("images", "texts", "fusion", "readout", "fusion_weight", "fusion_scale", "fusion_positives",
            "fusion_image_tokens")


def signature(saved: dict[str, Any]) -> tuple:
    """What makes two runs the same arm, whatever their seed: the method, its loss and ITO settings, the steps. CLIP,
    SigLIP and ITO are one model under other settings (one run key: ``artifacts.run_key``), told apart by those."""
    method = saved["method"]["name"]
    return ("ito" if method in ITO_FAMILY else method, saved["loss"]["name"], *(saved["ito"][key] for key in ITO_KEYS),
            saved["train"]["steps"])


def arm_names(kind: str) -> dict[tuple, str]:
    """Each arm's signature (an ablation arm, or a method at the experiment's steps), to name a run from its saved
    config.json. A method's run at other steps is its equal-compute arm (``run_name``)."""
    names = {}
    for arm in ABLATION_ARMS if kind == "ablation" else METHODS:
        override = f"ablation={arm}" if kind == "ablation" else f"method={arm}"
        cfg = as_dict(load_config([f"experiment={'ito_ablation' if kind == 'ablation' else 'method_comparison'}",
                                   override]))
        names[signature(cfg)] = arm
    return names


def run_name(names: dict[tuple, str], saved: dict[str, Any], kind: str) -> str | None:
    if kind == "ablation":
        return names.get(signature(saved))
    at_experiment_steps = {**saved, "train": {**saved["train"], "steps": STEPS}}
    name = names.get(signature(at_experiment_steps))
    return name if name is None or saved["train"]["steps"] == STEPS else f"{name} (equal compute)"


def finished_runs(root: Path) -> list[tuple[dict[str, Any], dict[str, Any], Path]]:
    """(saved config, train manifest, run folder) of every run with committed eval records."""
    runs = []
    for run_dir in sorted(Path(root, "runs").iterdir()):
        if (run_dir / "eval" / MANIFEST).exists():
            runs.append((json.loads((run_dir / "config.json").read_text()),
                         json.loads((run_dir / "train" / MANIFEST).read_text()), run_dir))
    return runs


def table(rows: dict[str, list[dict[str, float]]], order: list[str], metrics: dict[str, str], label: str) -> list[str]:
    lines = [f"| {label} | seeds | steps | " + " | ".join(metrics.values()) + " |",
             "|---|---|---|" + "---|" * len(metrics)]
    for name in (n for n in order if n in rows):
        runs = rows[name]
        cells = []
        for metric in metrics:
            values = [run[metric] for run in runs if metric in run]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.3f} ± {spread:.3f}" if values else "–")
        steps = sorted({int(run["steps"]) for run in runs})
        lines.append(f"| {name} | {len(runs)} | {'/'.join(map(str, steps))} | " + " | ".join(cells) + " |")
    return lines


def main(kind: str, root: str, out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = arm_names(kind)
    rows: dict[str, list[dict[str, float]]] = {}
    for saved, train, run_dir in finished_runs(Path(root)):
        name = run_name(names, saved, kind)
        if name is None:
            continue
        records = json.loads((run_dir / "eval" / MANIFEST).read_text())["records"]
        last = train["history"][-1]
        rows.setdefault(name, []).append(summary_metrics(records) | {
            "final_align_loss": last.get("align_loss", last["loss"]), "steps": saved["train"]["steps"]})
        plot = run_dir / "eval" / "umap-shapes.png"
        if saved["seed"] == 0 and plot.exists():
            shutil.copy(plot, out_dir / f"umap-{kind}-{name.replace(' (', '-').replace(' ', '_').rstrip(')')}.png")
    order = list(ABLATION_ARMS) if kind == "ablation" else [n for m in METHODS for n in (m, f"{m} (equal compute)")]
    lines = table(rows, order, METRICS, "arm" if kind == "ablation" else "method")
    if any(TC_METRICS.keys() & run.keys() for runs in rows.values() for run in runs):
        lines += ["", *table({k: v for k, v in rows.items() if k.startswith("flair")}, order, TC_METRICS, "method")]
    (out_dir / f"{kind}_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:4])
