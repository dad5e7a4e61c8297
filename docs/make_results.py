"""Rebuild docs/RESULTS.md's tables and plots from the sweep records committed under docs/results/.

    python docs/make_results.py            # rewrite RESULTS.md's generated tables and docs/results/<study>/*.png
    python docs/make_results.py --check    # exit 1 when RESULTS.md's tables differ from what the records give
    python docs/make_results.py collect <storage root> <sweep name> <study>
                                           # a finished sweep's results.json -> docs/results/<study>/<sweep>.json
    python docs/make_results.py steps      # each method's equal-compute steps (docs/run_studies.sh)

A study is the ``results.json`` of one or more finished sweeps (``ito-sweep run ... --sweep-name <sweep>``): every
grid point with its overrides, per-seed eval metrics and final losses. Tables are the sweep report's statistics
(``flows.report.sweep_statistics``: per arm mean ± 95 % t interval over seeds; each arm against CLIP paired by
seed, with a verdict), so RESULTS.md says what the report says. Each generated table sits between
``<!-- generated: <block> -->`` and ``<!-- end generated -->`` in RESULTS.md; the text around it is written by hand.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flows.grid import axis_values
from flows.plots import plot_metrics
from flows.report import report_rows, sweep_statistics, to_markdown
from ito_core.config import load_config

DOCS = Path(__file__).resolve().parent
RECORDS = DOCS / "results"
RESULTS_MD = DOCS / "RESULTS.md"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated -->)", re.S)

# Columns of the tables: report column -> short label. Held-out sets first; Fashion-MNIST is in-distribution.
METRICS = {
    "tuxpaint/acc1": "tuxpaint ZS acc1",
    "tuxpaint/image_retrieval_recall@1": "tuxpaint T→I R@1",
    "tuxpaint/text_retrieval_recall@1": "tuxpaint I→T R@1",
    "shapes_heldout/acc1": "novel shapes ZS acc1",
    "shapes/image_retrieval_recall@1": "shapes T→I R@1",
    "shapes/centroid_distance": "gap (centroid dist)",
    "fashion_mnist/acc1": "F-MNIST ZS acc1 (in-dist.)",
    "fashion_mnist/lp_acc1": "F-MNIST LP acc1 (in-dist.)",
}
LR_SELECTION_METRIC = "fashion_mnist/acc1"  # in-distribution: the held-out sets stay unseen by the tuning
STEPS = str(load_config(["experiment=method_comparison"]).train.steps)  # the equal-step arms' steps
CHEAP_VIEWS = ("ito_fusion_cls", "ito_cheap_views")  # ITO with full views, then with half of each view's patches


def load_points(study: str) -> list[dict[str, Any]]:
    """Every grid point of the study's committed sweeps, in file then grid order."""
    points = []
    for path in sorted((RECORDS / study).glob("*.json")):
        points += json.loads(path.read_text())["points"]
    return points


def values_of(point: dict[str, Any]) -> dict[str, str]:
    return dict(override.split("=", 1) for override in point["overrides"])


def present(points: list[dict[str, Any]]) -> list[str]:
    """The table metrics some point has."""
    return [m for m in METRICS if any(m in p.get("metrics", {}) for p in points)]


def fmt_mean(record: dict[str, Any]) -> str:
    if record["ci_low"] == "":
        return f"{record['mean']:.3f} (n=1)"
    return f"{record['mean']:.3f} ± {record['mean'] - record['ci_low']:.3f}"


def fmt_difference(record: dict[str, Any]) -> str:
    if record["ci_low"] == "":
        return f"{record['difference']:+.3f} (n={record['n']})"
    mark = {"above": " ▲", "below": " ▼"}.get(record["verdict"], "")
    return f"{record['difference']:+.3f} ± {record['difference'] - record['ci_low']:.3f}{mark}"


def arm_tables(points: list[dict[str, Any]], arm_axis: str, baseline: str) -> tuple[str, str]:
    """(means, differences) tables of ``points`` grouped by ``arm_axis`` over seeds, each arm against ``baseline``."""
    axes = [arm_axis, "seed"]
    metrics = present(points)
    stats = sweep_statistics(report_rows(points, axes), axes, metrics, replicate_axis="seed",
                             baseline={arm_axis: baseline})
    arms = list(dict.fromkeys(r[arm_axis] for r in stats["arms"]))
    means = [{"arm": arm, "n": max(r["n"] for r in stats["arms"] if r[arm_axis] == arm),
              **{METRICS[r["metric"]]: fmt_mean(r) for r in stats["arms"] if r[arm_axis] == arm}} for arm in arms]
    diffs = [{"arm": arm, "pairs": max(r["n"] for r in stats["comparisons"] if r[arm_axis] == arm),
              **{METRICS[r["metric"]]: fmt_difference(r) for r in stats["comparisons"] if r[arm_axis] == arm}}
             for arm in arms if arm != baseline]
    return to_markdown(means), to_markdown(diffs)


def lr_table() -> str:
    """The LR sweep (one seed): each method's metrics per learning rate, and the rate the comparison uses."""
    points = load_points("lr_sweep")
    best = best_learning_rates(points)
    rows = []
    for point in points:
        values = values_of(point)
        chosen = " (chosen)" if best[values["comparison"]] == values["train.lr"] else ""
        rows.append({"method": values["comparison"], "lr": values["train.lr"] + chosen,
                     **{METRICS[m]: f"{point['metrics'][m]:.3f}" for m in present(points)
                        if m in point.get("metrics", {})}})
    return to_markdown(rows)


def best_learning_rates(points: list[dict[str, Any]]) -> dict[str, str]:
    """Each method's learning rate with the best ``LR_SELECTION_METRIC`` in the LR sweep."""
    best: dict[str, tuple[float, str]] = {}
    for point in points:
        values = values_of(point)
        score = point.get("metrics", {}).get(LR_SELECTION_METRIC, float("-inf"))
        if score > best.get(values["comparison"], (float("-inf"), ""))[0]:
            best[values["comparison"]] = (score, values["train.lr"])
    return {method: lr for method, (_, lr) in best.items()}


def labelled(points: list[dict[str, Any]], axis: str, label: Callable[[dict[str, str]], str]) -> list[dict[str, Any]]:
    """Points with their overrides reduced to ``axis=label(values)`` and ``seed``: sweeps of different grids in one
    arm column."""
    return [{**p, "overrides": [f"{axis}={label(values_of(p))}", f"seed={values_of(p)['seed']}"]} for p in points]


STEP_COST = RECORDS / "step_cost.json"  # bench/train_step.py --variants methods --model-config tiny --batch-size 128
BENCH_NAMES = {"siglip": "SigLIP", "slip": "SLIP", "flair": "FLAIR", "oner": "OneR", "ito": "ITO"}


def equal_compute_steps() -> dict[str, dict[str, int]]:
    """Each method's steps at CLIP's compute of ``STEPS`` steps: by the FLOP ratio (analytic where ito_core.flops
    counts the method, else torch's FLOP counter) and by the measured step-time ratio (median of per-round ratios)."""
    ratios = json.loads(STEP_COST.read_text())["ratios"]
    steps = {}
    for method, name in BENCH_NAMES.items():
        ratio = ratios[f"{name} / CLIP baseline (step time)"]
        steps[method] = {"flops": round(int(STEPS) / ratio["analytic_flop_ratio"]),
                         "time": round(int(STEPS) / ratio["median_per_round"])}
    return steps


def steps_table() -> str:
    ratios = json.loads(STEP_COST.read_text())["ratios"]
    rows = []
    for method, steps in equal_compute_steps().items():
        ratio = ratios[f"{BENCH_NAMES[method]} / CLIP baseline (step time)"]
        rows.append({"method": method, "FLOPs / CLIP": f"{ratio['analytic_flop_ratio']:.2f}x",
                     "step time / CLIP": f"{ratio['median_per_round']:.2f}x", "steps by FLOPs": steps["flops"],
                     "steps by time": steps["time"]})
    return to_markdown(rows)


def equal_compute_points() -> list[dict[str, Any]]:
    """The comparison's arms at equal steps plus every method at its equal-compute steps (two sweeps per method:
    steps from analytic FLOPs and from measured step time), named ``<method> @ <steps>``."""
    def name(values: dict[str, str]) -> str:
        return f"{values['comparison']} @ {values.get('train.steps', STEPS)}"

    return labelled(load_points("methods"), "arm", name) + labelled(load_points("equal_compute"), "arm", name)


def blocks() -> dict[str, str]:
    methods_means, methods_diffs = arm_tables(load_points("methods"), "comparison", "clip")
    ablation_means, ablation_diffs = arm_tables(load_points("ablation"), "ablation", "clip")
    fusion_points = [p for p in load_points("ablation") if values_of(p)["ablation"] != "clip"]
    _, fusion_diffs = arm_tables(fusion_points, "ablation", "multi_align")  # fusion on vs off, both at M=2
    cheap_points = [p for p in load_points("ablation") if values_of(p)["ablation"] in CHEAP_VIEWS]
    _, cheap_diffs = arm_tables(cheap_points, "ablation", CHEAP_VIEWS[0])  # half the patches vs every patch
    equal_means, equal_diffs = arm_tables(equal_compute_points(), "arm", f"clip @ {STEPS}")
    return {"lr-sweep": lr_table(), "equal-compute-steps": steps_table(),
            "methods": methods_means, "methods-vs-clip": methods_diffs,
            "equal-compute": equal_means, "equal-compute-vs-clip": equal_diffs,
            "ablation": ablation_means, "ablation-vs-clip": ablation_diffs, "ablation-vs-multi-align": fusion_diffs,
            "cheap-views": cheap_diffs}


def rebuilt(text: str, tables: dict[str, str]) -> str:
    """RESULTS.md with every generated block replaced by its table; an unknown block name is an error."""
    def fill(match: re.Match[str]) -> str:
        if match["name"] not in tables:
            raise ValueError(f"RESULTS.md names block {match['name']!r}; make_results.py builds {sorted(tables)}")
        return f"{match.group(1)}{tables[match['name']]}{match.group(4)}"

    return BLOCK.sub(fill, text)


def write_plots() -> None:
    """Each study's error-bar plots (mean ± 95 % interval over seeds) beside its records."""
    for study, axis in (("methods", "comparison"), ("ablation", "ablation")):
        points = load_points(study)
        plot_metrics(report_rows(points, [axis, "seed"]), [axis, "seed"], RECORDS / study, list(METRICS))


def collect(root: str, sweep: str, study: str) -> None:
    """Copy a finished sweep's results.json into the study's records, failed points included."""
    source = Path(root) / "sweeps" / sweep / "results.json"
    target = RECORDS / study / f"{sweep}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    points = json.loads(source.read_text())["points"]
    target.write_text(json.dumps({"points": points}, indent=1, sort_keys=True) + "\n")
    print(f"{target}: {len(points)} points, axes {list(axis_values([p['overrides'] for p in points]))}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["collect"]:
        collect(*argv[1:4])
        return 0
    if argv[:1] == ["steps"]:  # docs/run_studies.sh: "<method> <steps,steps>" for the equal-compute sweeps
        for method, steps in equal_compute_steps().items():
            print(method, ",".join(str(s) for s in dict.fromkeys(steps.values()) if s != int(STEPS)))
        return 0
    text = RESULTS_MD.read_text()
    new = rebuilt(text, blocks())
    if argv[:1] == ["--check"]:
        if new != text:
            print("docs/RESULTS.md's tables differ from the records: run python docs/make_results.py")
            return 1
        return 0
    RESULTS_MD.write_text(new)
    write_plots()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
