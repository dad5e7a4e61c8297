"""Config validation: every value a user can set is checked before any work starts (prep, jobs), and a bad
one raises ``ValueError`` naming the key and the fix. Pure checks: no executor is built, nothing is written."""

from __future__ import annotations

import os
import re
from pathlib import Path

from ito_core.config.checks import accumulation_steps  # noqa: F401 (re-exported: ito_core.config)
from ito_core.config.checks import choice as _choice
from ito_core.config.checks import require as _require
from ito_core.config.registry import EVAL_LAYOUTS, RAW_INPUT_KINDS
from ito_core.config.schema import (
    ClusterConfig,
    DataConfig,
    EvalConfig,
    ItoConfig,
    MethodConfig,
    ModelConfig,
    RunConfig,
    StorageConfig,
    TrainConfig,
    eval_task_sets,
    fuses,
)
from ito_core.config.views import check_views
from ito_core.methods import registry
from ito_core.storage.s3 import split_s3_url

FUSION_KINDS = ("none", "transformer")
FUSION_SCALES = ("live", "detached")
FUSION_POSITIVES = ("view_mean", "supcon")
FUSION_POOL = re.compile(r"^pool(\d+)$")
READOUTS = ("cls", "mean", "token")
LOSS_NAMES = ("clip", "siglip")  # ito_core.losses.ALIGN_LOSSES, torch-free (tests/unit/test_losses.py: in sync)
STORAGE_KINDS = ("local", "s3")
EMBEDDED_SOURCES = ("fashion_mnist", "shapes", "openclipart")  # data=embedded training sources
EMBEDDED_EVAL_SETS = ("fashion_mnist", "shapes", "shapes_heldout", "tuxpaint")  # ito_core/prep.py
DATA_NAMES = ("embedded", "webdataset", "raw")
RESIZE_MODES = ("center_crop", "shorter_side")
PRECISIONS = ("fp32", "bf16", "fp16")
EVAL_EXECUTORS = ("auto", "inprocess", "job")
EVAL_TASK_KEYS = ("zero_shot", "retrieval", "linear_probe", "modality_gap")
NONFINITE_POLICIES = ("skip", "stop")


def validate(cfg: RunConfig) -> RunConfig:
    """Raise ``ValueError`` naming the key and the fix for any impossible value, in any section."""
    _validate_model(cfg.model)
    _validate_ito(cfg.ito, cfg.model)
    _choice(cfg.loss.name, "loss.name", LOSS_NAMES)
    check_method(cfg)
    check_views(cfg)
    validate_cluster(cfg.cluster)
    _validate_train(cfg.train, world_size=cfg.cluster.nodes * cfg.cluster.tasks_per_node)
    _require(cfg.deepspeed.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage",
             f"{cfg.deepspeed.zero_stage}", "choose one of [0, 1, 2, 3]")
    _choice(cfg.deepspeed.precision, "deepspeed.precision", PRECISIONS)
    _validate_storage(cfg.storage)
    _validate_data(cfg.data)
    _validate_eval(cfg.eval)
    _choice(cfg.wandb.mode, "wandb.mode", ("online", "offline", "disabled"))
    _require(0 < cfg.plan.mfu <= 1, "plan.mfu", f"{cfg.plan.mfu}", "use a fraction in (0, 1], e.g. 0.4 for 40 %")
    return cfg


def _validate_model(m: ModelConfig) -> None:
    for key in ("embed_dim", "image_size", "patch_size", "vision_width", "vision_layers", "text_width",
                "text_layers", "context_length"):
        _require(getattr(m, key) > 0, f"model.{key}", "must be > 0", "set a positive integer")
    _require(m.image_size % m.patch_size == 0, "model.image_size",
             f"{m.image_size} is not a multiple of model.patch_size={m.patch_size}", "pick a multiple")
    _require(m.vision_width % m.vision_heads == 0, "model.vision_heads",
             f"vision_width={m.vision_width} is not divisible by {m.vision_heads}", "pick a divisor")
    _require(m.text_width % m.text_heads == 0, "model.text_heads",
             f"text_width={m.text_width} is not divisible by {m.text_heads}", "pick a divisor")


def _validate_ito(ito: ItoConfig, m: ModelConfig) -> None:
    _require(ito.images >= 1, "ito.images", f"M={ito.images}", "use at least 1 image view")
    _require(ito.texts >= 1, "ito.texts", f"N={ito.texts}", "use at least 1 text variant")
    _choice(ito.fusion, "ito.fusion", FUSION_KINDS)
    _choice(ito.readout, "ito.readout", READOUTS)
    _require(ito.fusion_weight >= 0, "ito.fusion_weight", f"lambda={ito.fusion_weight} < 0", "use lambda >= 0")
    if fuses(ito):
        _require(ito.images * ito.texts >= 2, "ito.fusion",
                 f"fusion needs >= 2 fused views per sample for its contrastive loss, got M*N="
                 f"{ito.images}*{ito.texts}", "set ito.images>=2 or ito.texts>=2, or ito.fusion=none")
        _choice(ito.fusion_scale, "ito.fusion_scale", FUSION_SCALES)
        _choice(ito.fusion_positives, "ito.fusion_positives", FUSION_POSITIVES)
        if ito.fusion_positives == "view_mean":
            _require(ito.images >= 2, "ito.fusion_positives",
                     f"view_mean contrasts the M={ito.images} image view(s) of a sample and needs M >= 2",
                     "set ito.images>=2, or ito.fusion_positives=supcon to contrast the M x N fused vectors")
        fusion_image_tokens(ito.fusion_image_tokens, grid=m.image_size // m.patch_size)
        width = ito.fusion_width or m.embed_dim
        _require(ito.fusion_depth >= 1, "ito.fusion_depth", f"{ito.fusion_depth}", "use >= 1 layer")
        _require(width % ito.fusion_heads == 0, "ito.fusion_heads",
                 f"fusion width {width} is not divisible by {ito.fusion_heads}", "pick a divisor")


def fusion_image_tokens(value: str, *, grid: int) -> int | None:
    """The patch tokens ``ito.fusion_image_tokens`` keeps: None for all of them, 0 for none (cls), k for pool<k>."""
    if value in ("all", "cls"):
        return None if value == "all" else 0
    match = FUSION_POOL.match(value)
    k = int(match.group(1)) if match else -1
    side = round(k ** 0.5) if k > 0 else 0
    _require(side * side == k and 1 <= side <= grid, "ito.fusion_image_tokens",
             f"{value!r} is not all, cls or pool<k> with k a square number of at most the {grid}x{grid} patch grid",
             f"use e.g. all, cls, pool4 or pool{min(grid, 4) ** 2}")
    return k


def check_method(cfg: RunConfig) -> None:
    """``method.name`` and the settings its method needs (its spec's ``validate``)."""
    spec = registry.get(cfg.method.name)
    assert isinstance(cfg.method, spec.config or MethodConfig), (spec.name, type(cfg.method))
    if spec.validate is not None:
        spec.validate(cfg)


def _validate_train(tr: TrainConfig, *, world_size: int) -> None:
    _require(tr.steps >= 1, "train.steps", f"{tr.steps}", "use >= 1")
    _require(tr.lr > 0, "train.lr", f"{tr.lr}", "use a positive learning rate")
    _require(0 <= tr.warmup_steps <= tr.steps, "train.warmup_steps", f"{tr.warmup_steps} not in [0, steps]",
             "use 0 <= warmup_steps <= train.steps")
    _require(tr.batch_size >= 2 and tr.batch_size % world_size == 0, "train.batch_size",
             f"{tr.batch_size} must be >= 2 and divisible by the {world_size} training processes",
             "pick a multiple of cluster.nodes * cluster.tasks_per_node")
    accumulation_steps(tr, world_size)  # raises for a micro batch that does not divide the per-rank batch
    _require(tr.grad_clip >= 0, "train.grad_clip", f"{tr.grad_clip}", "use a norm > 0, or 0 to disable clipping")
    _require(tr.checkpoint_every >= 1, "train.checkpoint_every", f"{tr.checkpoint_every}", "use >= 1")
    _require(tr.keep_checkpoints >= 1, "train.keep_checkpoints", f"{tr.keep_checkpoints}", "keep >= 1")
    _choice(tr.nonfinite, "train.nonfinite", NONFINITE_POLICIES)
    _require(tr.max_skipped_steps >= 0, "train.max_skipped_steps", f"{tr.max_skipped_steps}", "use >= 0")
    _require(tr.max_bad_shards >= 0, "train.max_bad_shards", f"{tr.max_bad_shards}", "use >= 0")
    _require(tr.peak_tflops >= 0, "train.peak_tflops", f"{tr.peak_tflops}", "use the device's peak, or 0 if unknown")


def validate_cluster(cfg: ClusterConfig) -> None:
    """The ``cluster.*`` values every executor reads. ``cluster.kind`` and each executor's own rules are checked
    by its module (``cluster/executors``, from the flow's config loading): ito_core knows no executor."""
    for key, low in (("nodes", 1), ("tasks_per_node", 1), ("gpus_per_node", 0), ("cpus_per_task", 1),
                     ("mem_gb", 0), ("timeout_min", 1), ("max_requeues", 0), ("prep_tasks", 1),
                     ("torch_threads", 0)):
        value = getattr(cfg, key)
        _require(isinstance(value, int) and value >= low, f"cluster.{key}", f"{value!r}", f"use an integer >= {low}")
    _require(isinstance(cfg.progress_every_s, int | float) and cfg.progress_every_s >= 0, "cluster.progress_every_s",
             f"{cfg.progress_every_s!r}", "use seconds >= 0 (0 sends every progress line to Prefect)")
    _require(isinstance(cfg.slot_retry_s, int | float) and cfg.slot_retry_s >= 0, "cluster.slot_retry_s",
             f"{cfg.slot_retry_s!r}", "use seconds >= 0 (0 = one try to take the ito-train slot)")
    if cfg.gpus_per_node:
        _require(cfg.tasks_per_node == cfg.gpus_per_node, "cluster.tasks_per_node",
                 f"{cfg.tasks_per_node} tasks for {cfg.gpus_per_node} GPUs per node (one training process per GPU)",
                 f"set cluster.tasks_per_node={cfg.gpus_per_node}")
    check_job_folder(Path(cfg.work_dir).resolve())


def check_job_folder(folder: Path) -> None:
    """A job folder every executor can use (``cluster.work_dir`` + the run key)."""
    # sbatch reads one option per line, as do other schedulers' scripts: a newline would end the line.
    _require("\n" not in str(folder), "cluster.work_dir", f"job folder {str(folder)!r} contains a newline",
             "pick a work_dir (and run key) without newlines")


def config_warnings(cfg: RunConfig) -> list[str]:
    """Valid settings that are probably not what the user meant, one line each (train logs them, plan prints
    them)."""
    warmup, steps, out = cfg.train.warmup_steps, cfg.train.steps, []
    if steps > 1 and warmup >= steps:
        out.append(f"config train.warmup_steps={warmup} equals train.steps: the whole run is linear warm-up, the "
                   "learning rate only reaches train.lr at the last step and never decays; lower train.warmup_steps")
    spec = registry.get(cfg.method.name)
    if spec.warnings is not None:
        out += spec.warnings(cfg)
    if spec.flops_uncounted:
        out.append(f"config method.name={cfg.method.name}: the FLOP count behind `ito-sweep plan`'s GPU-hours and "
                   f"the logged MFU covers the towers only, not {spec.flops_uncounted}; time a few steps "
                   "(bench/train_step.py --variants methods) for its real cost")
    return out


def _validate_storage(st: StorageConfig) -> None:
    """The store's root must be usable before prep writes to it: a bucket URL, or a folder this user can write
    (created if missing, so its nearest existing parent must be one)."""
    _choice(st.kind, "storage.kind", STORAGE_KINDS)
    if st.kind == "s3":
        try:
            split_s3_url(st.root, what="storage.root")
        except ValueError:
            _require(False, "storage.root", f"{st.root!r} is not an s3:// URL with a bucket",
                     "set storage.root=s3://BUCKET/PREFIX")
        return
    _require(not st.root.startswith("s3://"), "storage.root", f"{st.root!r} with storage.kind=local",
             "add storage=s3 (or use a local directory)")
    root = Path(st.root).resolve()
    existing = next(p for p in (root, *root.parents) if p.exists())
    _require(existing.is_dir(), "storage.root", f"{str(existing)!r} is an existing file, not a folder",
             "point storage.root at a folder (it is created if missing)")
    _require(os.access(existing, os.W_OK | os.X_OK), "storage.root",
             f"{str(existing)!r} is a folder this user cannot write", "point storage.root at a writable folder")


def _validate_eval(ev: EvalConfig) -> None:
    """Eval settings that need no data to check; a set's files are checked by prep."""
    _choice(ev.precision, "eval.precision", PRECISIONS)
    _choice(ev.executor, "eval.executor", EVAL_EXECUTORS)
    for name, spec in ev.datasets.items():
        key = f"eval.datasets.{name}"
        _require(re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None, key, "the set name must be a store-key segment",
                 "use letters, digits, '_' and '-' only")
        _require(name not in EMBEDDED_EVAL_SETS, key, f"{name!r} is an embedded set", "pick another name")
        layout, sep, path = spec.partition(":")
        _require(bool(sep and path) and layout in EVAL_LAYOUTS, key, f"{spec!r} is not '<layout>:<path>' with a "
                 "known layout", f"write e.g. imagenet:/data/imagenet/val; layouts: {list(EVAL_LAYOUTS)}")
    for task in EVAL_TASK_KEYS:
        value = getattr(ev, task)
        _require(isinstance(value, str) or (isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)),
                 f"eval.{task}", f"{value!r} is not a set name or a list of set names",
                 f"write eval.{task}=<set> or eval.{task}=[<set>,<set>]")
        for name in eval_task_sets(ev, task):
            _require(name in EMBEDDED_EVAL_SETS or name in ev.datasets, f"eval.{task}",
                     f"{name!r} is neither an embedded set {list(EMBEDDED_EVAL_SETS)} nor a key of eval.datasets",
                     f"add +eval.datasets.{name}=<layout>:<path>, or leave it out of eval.{task} ('' skips the task)")


def _validate_data(data: DataConfig) -> None:
    _choice(data.name, "data.name", DATA_NAMES)
    _require(data.image_size > 0, "data.image_size", f"{data.image_size}", "set a positive size in pixels")
    _require(data.samples_per_shard > 0, "data.samples_per_shard", f"{data.samples_per_shard}", "use >= 1")
    _require(1 <= data.jpeg_quality <= 100, "data.jpeg_quality", f"{data.jpeg_quality}", "use 1..100")
    _choice(data.resize_mode, "data.resize_mode", RESIZE_MODES)
    if data.name == "webdataset":
        _require(bool(data.shards), "data.shards", "no shard URLs given", "set data.shards=[...]")
    elif data.name == "embedded":
        for src in data.sources:
            _choice(src, "data.sources", EMBEDDED_SOURCES)
        _require(bool(data.sources), "data.sources", "empty", f"list some of {list(EMBEDDED_SOURCES)}")
    else:
        _choice(data.input_kind, "data.input_kind", RAW_INPUT_KINDS)
        _require(bool(data.input), "data.input", "empty", "set data.input=<local path or s3:// URL>")
        if data.input_kind != "folder":  # a folder's captions are the lines of its .txt sidecars
            _require(bool(data.caption_columns), "data.caption_columns", "empty",
                     "list the caption columns, e.g. data.caption_columns=[caption]")
        if data.input_kind == "table":
            _require(bool(data.image_column), "data.image_column", "empty",
                     "name the column of image paths or URLs, e.g. data.image_column=url")
        _require(data.min_image_size >= 0, "data.min_image_size", f"{data.min_image_size}", "use >= 0 (0 = no limit)")
        _require(data.max_aspect_ratio == 0 or data.max_aspect_ratio >= 1, "data.max_aspect_ratio",
                 f"{data.max_aspect_ratio}", "use a ratio >= 1, or 0 for no limit")
        _require(data.max_pixels > 0, "data.max_pixels", f"{data.max_pixels}", "use a positive pixel count")
        _require(data.prep_workers >= 1, "data.prep_workers", f"{data.prep_workers}", "use >= 1 process")


