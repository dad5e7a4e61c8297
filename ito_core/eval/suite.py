"""The eval stage: zero-shot classification, retrieval, linear probe and modality gap of a stripped model.

Each eval set is read and encoded once per model (images, plus captions when a task needs them:
``ito_core.eval.encode``) and every task on that set reads the same features, a method's extra eval path
(``ito_core.eval.extra``, FLAIR's text-conditioned scoring) included. Results use CLIP_benchmark's record layout
(``dataset``, ``model``, ``pretrained``, ``task``, ``metrics``) so they can sit beside CLIP_benchmark outputs;
a modality-gap record
also names its UMAP plot under ``plots``, and every record says whether its set is ``in_distribution``: drawn
from a source the training data holds (``in_distribution``), so its zero-shot score is recall rather than
transfer.

Each task key of ``EvalConfig`` names a list of sets (or one set); a set is encoded once for all its tasks.
Zero-shot scores the samples with a label (a set may hold unclassed samples for retrieval: Tux Paint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ito_core.config import EMBEDDED_EVAL_SETS, EvalConfig, RunConfig, eval_task_sets
from ito_core.data.embedded import embedded_eval_classes
from ito_core.data.eval_sets import check_eval_tasks
from ito_core.eval.encode import EvalFeatures, encode_eval_set, zero_shot_classifier
from ito_core.eval.extra import ExtraEval
from ito_core.eval.features import model_device
from ito_core.eval.linear_probe import linear_probe_metrics, split_indices
from ito_core.eval.modality_gap import modality_gap_metrics
from ito_core.eval.names import TASKS, eval_plan
from ito_core.eval.plots import plot_modality_umap
from ito_core.eval.retrieval import retrieval_metrics
from ito_core.eval.zero_shot import zero_shot_metrics
from ito_core.models.dual_encoder import DualEncoder

log = logging.getLogger(__name__)

TEXT_TASKS = {"zeroshot_retrieval", "modality_gap"}  # tasks that need the captions encoded
PROBE_SPLIT_SEED = 0  # fixed, so every grid point's probe sees the same split
# Embedded eval set -> the data=embedded training source it is drawn from (same distribution, other samples).
# shapes_heldout (unseen colour x shape pairs) and tuxpaint (another package, deduplicated) have none.
EVAL_SET_SOURCES = {"fashion_mnist": "fashion_mnist", "shapes": "shapes"}


def in_distribution(name: str, cfg: RunConfig) -> bool:
    """Whether eval set ``name`` is drawn from a source in the training data (data=embedded's ``sources``): its
    zero-shot and probe scores then measure recall of the training distribution, not transfer. A user set
    (eval.datasets) is reported as held out: nothing here knows what the user's training data holds."""
    source = EVAL_SET_SOURCES.get(name)
    return cfg.data.name == "embedded" and source is not None and source in cfg.data.sources


def summary_in_distribution(records: list[dict[str, Any]]) -> dict[str, bool]:
    """``<dataset>/<metric>`` -> the record's ``in_distribution`` flag, keyed like ``summary_metrics`` (records
    from before the flag count as held out)."""
    return {f"{r['dataset']}/{k}": bool(r.get("in_distribution", False)) for r in records for k in r["metrics"]}


def check_eval_config(eval_cfg: EvalConfig) -> None:
    """Raise ``ValueError`` naming the key and the fix for eval settings no task could run with."""
    val, test = eval_cfg.probe_val_fraction, eval_cfg.probe_test_fraction
    if eval_task_sets(eval_cfg, "linear_probe") and not (val > 0 and test > 0 and val + test < 1):
        raise ValueError(f"config eval.probe_val_fraction={val}, eval.probe_test_fraction={test}: the probe needs "
                         "both > 0 with a sum < 1 (the rest is its training split)")
    if eval_task_sets(eval_cfg, "linear_probe") and (not eval_cfg.probe_c_grid or min(eval_cfg.probe_c_grid) <= 0):
        raise ValueError(f"config eval.probe_c_grid={list(eval_cfg.probe_c_grid)}: list one or more C > 0")
    if eval_cfg.umap_points < 0 or eval_cfg.batch_size < 1:
        raise ValueError(f"config eval.umap_points={eval_cfg.umap_points}, eval.batch_size={eval_cfg.batch_size}: "
                         "use umap_points >= 0 (0 = no plot) and batch_size >= 1")


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 autocast only on CUDA (on CPU it is slow and partly unsupported); bf16 runs anywhere."""
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"config eval.precision=fp16 on a {device.type} device: fp16 autocast needs CUDA; "
                         "use eval.precision=bf16 or fp32")


def set_classnames(name: str, manifest: dict[str, Any]) -> list[str]:
    """Class names from the set's prep manifest; embedded sets prepared before manifests had them use their own."""
    if manifest.get("classnames"):
        return list(manifest["classnames"])
    return embedded_eval_classes(name) if name in EMBEDDED_EVAL_SETS else []


def zero_shot_task(model: DualEncoder, name: str, feats: EvalFeatures, cfg: RunConfig) -> dict[str, float]:
    labelled_N = feats.labels_N >= 0
    if not labelled_N.any():
        raise ValueError(f"config eval.zero_shot names {name!r}, whose samples have no labels; leave it out of "
                         "eval.zero_shot")
    return zero_shot_metrics(feats.images_ND[labelled_N.to(feats.images_ND.device)], feats.labels_N[labelled_N],
                             zero_shot_classifier(model, feats, cfg))


def retrieval_task(model: DualEncoder, name: str, feats: EvalFeatures, cfg: RunConfig) -> dict[str, float]:
    assert feats.texts_TD is not None and feats.text_to_image_T is not None
    return retrieval_metrics(feats.images_ND, feats.texts_TD, feats.text_to_image_T, text_ids_T=feats.text_ids_T)


def linear_probe_task(model: DualEncoder, name: str, feats: EvalFeatures, cfg: RunConfig) -> dict[str, float]:
    if (feats.labels_N < 0).any():
        raise ValueError(f"config eval.linear_probe names {name!r}: {(feats.labels_N < 0).sum()} samples have no "
                         "label; pick a labelled eval set or leave it out of eval.linear_probe")
    splits = split_indices(feats.labels_N, val_fraction=cfg.eval.probe_val_fraction,
                           test_fraction=cfg.eval.probe_test_fraction, seed=PROBE_SPLIT_SEED)
    return linear_probe_metrics(feats.images_ND, feats.labels_N, splits=splits, c_grid=cfg.eval.probe_c_grid)


def modality_gap_task(model: DualEncoder, name: str, feats: EvalFeatures, cfg: RunConfig) -> dict[str, float]:
    assert feats.texts_TD is not None and feats.text_to_image_T is not None
    return modality_gap_metrics(feats.images_ND, feats.texts_TD, feats.text_to_image_T)


TASK_FNS: dict[str, Callable[[DualEncoder, str, EvalFeatures, RunConfig], dict[str, float]]] = {
    "zeroshot_classification": zero_shot_task, "zeroshot_retrieval": retrieval_task,
    "linear_probe": linear_probe_task, "modality_gap": modality_gap_task}


def evaluate(model: DualEncoder, cfg: RunConfig, eval_shards: dict[str, list[str]], *, model_name: str,
             pretrained: str, plot_dir: Path | None = None, manifests: dict[str, dict[str, Any]] | None = None,
             extra_eval: ExtraEval | None = None) -> list[dict[str, Any]]:
    """Run every configured eval task; ``eval_shards`` maps eval set names to shard paths and ``manifests`` to
    their prep manifests (class names; whether the captions are the set's own). With ``plot_dir`` (and
    ``eval.umap_points`` > 0) the modality-gap record names its ``umap-<set>.png`` written there. ``extra_eval``: a
    method's own eval path, handed each set's features; its records follow the suite's."""
    check_eval_config(cfg.eval)
    plan = eval_plan(cfg.eval)
    missing = {name: [k for k in TASKS if name in eval_task_sets(cfg.eval, k)] for name in plan
               if name not in eval_shards}
    if missing:
        raise ValueError(f"no eval data for {missing} (eval set -> config keys); prepared sets: {sorted(eval_shards)}. "
                         "Run prep for them or point those eval.* keys at a prepared set ('' skips a task)")
    check_precision(cfg.eval.precision, model_device(model))
    manifests = manifests or {}
    classnames = {name: set_classnames(name, manifests.get(name, {})) for name in plan}
    for name in plan:  # every set is checked before the first one is encoded
        check_eval_tasks(name, classnames=classnames[name], captioned=manifests.get(name, {}).get("captioned", True),
                         eval_cfg=cfg.eval)
    records, extra_records = [], []
    for name, tasks in plan.items():
        extra = extra_eval if extra_eval is not None and extra_eval.wants(tasks) else None
        with_texts = bool(TEXT_TASKS & set(tasks)) or (extra is not None and extra.wants_texts(tasks))
        feats = encode_eval_set(model, eval_shards[name], cfg, with_texts=with_texts, name=name,
                                image_extra=extra.image_extra if extra is not None else None)
        feats.classnames, feats.in_distribution = classnames[name], in_distribution(name, cfg)
        for task in tasks:
            record = _record(name, task, TASK_FNS[task](model, name, feats, cfg), feats, model_name, pretrained)
            if task == "modality_gap" and plot_dir is not None and cfg.eval.umap_points > 0:
                record["plots"] = {"umap": _umap(feats, Path(plot_dir) / f"umap-{name}.png", cfg,
                                                 title=f"{model_name} on {name}: centroid distance "
                                                 f"{record['metrics']['centroid_distance']:.3f}")}
            records.append(record)
        if extra is not None:
            extra_records += [_record(name, r["task"], r["metrics"], feats, model_name, pretrained)
                              for r in extra.run(model, {name: feats}, cfg)]
    return records + extra_records


def _record(name: str, task: str, metrics: dict[str, float], feats: EvalFeatures, model_name: str,
            pretrained: str) -> dict[str, Any]:
    log.info("eval %s %s: %s", name, task, {k: round(v, 4) for k, v in metrics.items()})
    return {"dataset": name, "model": model_name, "pretrained": pretrained, "task": task,
            "in_distribution": feats.in_distribution, "metrics": metrics}


def _umap(feats: EvalFeatures, path: Path, cfg: RunConfig, *, title: str) -> str:
    assert feats.texts_TD is not None
    return plot_modality_umap(feats.images_ND, feats.texts_TD, path, max_points=cfg.eval.umap_points,
                              title=title).name


def summary_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Flat ``<dataset>/<metric>`` view of eval records, for sweep tables."""
    return {f"{r['dataset']}/{k}": v for r in records for k, v in r["metrics"].items()}


def summary_plots(records: list[dict[str, Any]]) -> dict[str, str]:
    """Flat ``<dataset>/<plot>`` -> file name (written to ``plot_dir``) view of eval records, for sweep reports."""
    return {f"{r['dataset']}/{k}": v for r in records for k, v in r.get("plots", {}).items()}
