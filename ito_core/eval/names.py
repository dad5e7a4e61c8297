"""What the eval stage will record, known from the config alone (no torch): the tasks each eval set runs and
the metric names each task writes, so a ``report.metrics`` pattern can be checked before any work starts.

``TASK_METRICS`` must list exactly the keys the metric functions return (tests/unit/eval/test_metric_names.py
runs each one and compares).
"""

from __future__ import annotations

from ito_core.config import EvalConfig, eval_task_sets
from ito_core.methods import registry

# EvalConfig key -> CLIP_benchmark task name, in the order tasks run.
TASKS = {"zero_shot": "zeroshot_classification", "retrieval": "zeroshot_retrieval",
         "linear_probe": "linear_probe", "modality_gap": "modality_gap"}
RETRIEVAL_KS = (1, 5, 10)
CLASSIFICATION_METRICS = ("acc1", "acc5", "mean_per_class_recall")
RETRIEVAL_METRICS = tuple(f"{side}_retrieval_recall@{k}" for k in RETRIEVAL_KS for side in ("image", "text"))
TASK_METRICS = {
    "zeroshot_classification": CLASSIFICATION_METRICS,
    "zeroshot_retrieval": RETRIEVAL_METRICS,
    "linear_probe": (*(f"lp_{m}" for m in CLASSIFICATION_METRICS), "lp_C", "lp_val_acc1"),
    "modality_gap": ("centroid_distance", "alignment", "uniformity_image", "uniformity_text", "matched_pair_cosine",
                     "random_pair_cosine"),
}
# The report's loss columns (flows.report), which report.plot_metrics may plot too: the total (align + lambda x
# fusion) and the alignment part alone, the one that compares across fusion settings.
LOSS_COLUMNS = ("final_loss", "final_align_loss")
# The tasks FLAIR's text-conditioned path scores (ito_core.eval.text_conditioned), as its spec's own_eval says.
TC_TASKS = ("zeroshot_classification", "zeroshot_retrieval")


def eval_plan(eval_cfg: EvalConfig) -> dict[str, list[str]]:
    """Eval set name -> CLIP_benchmark task names run on it."""
    plan: dict[str, list[str]] = {}
    for key, task in TASKS.items():
        for name in eval_task_sets(eval_cfg, key):
            plan.setdefault(name, []).append(task)
    return plan


def expected_metrics(eval_cfg: EvalConfig, *, method: str) -> list[str]:
    """Every ``<eval set>/<metric>`` name the eval stage of a run with these settings records."""
    names, extra = [], registry.get(method).own_eval
    for dataset, tasks in eval_plan(eval_cfg).items():
        for task in tasks:
            names += [f"{dataset}/{metric}" for metric in TASK_METRICS[task]]
            if extra is not None and task in extra.tasks:  # the method's own eval path scores it again
                names += [f"{dataset}/{extra.prefix}{metric}" for metric in TASK_METRICS[task]]
    return names
