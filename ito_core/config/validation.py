"""Config validation: every value a user can set is checked before any work starts (prep, jobs), and a bad
one raises ``ValueError`` naming the key and the fix. Pure checks: no executor is built, nothing is written."""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path

from ito_core.config.registry import EVAL_LAYOUTS, RAW_INPUT_KINDS
from ito_core.config.schema import (
    ClusterConfig,
    DataConfig,
    EvalConfig,
    ItoConfig,
    ModelConfig,
    RunConfig,
    StorageConfig,
    TrainConfig,
    eval_task_sets,
    fuses,
)
from ito_core.config.views import check_views
from ito_core.storage.s3 import split_s3_url

METHODS = ("clip", "siglip", "slip", "flair", "oner", "ito")
FUSION_KINDS = ("none", "transformer")
# What ito_core.flops leaves out of a method's training FLOPs (it counts the towers and ITO's fusion).
FLOPS_UNCOUNTED = {"slip": "its SimCLR head", "flair": "its text-conditioned pooling of every image by every caption",
                   "oner": "its joint image+text passes (CIC, CMC)"}
FUSION_SCALES = ("live", "detached")
FUSION_POSITIVES = ("view_mean", "supcon")
FUSION_POOL = re.compile(r"^pool(\d+)$")
READOUTS = ("cls", "mean", "token")
LOSS_NAMES = ("clip", "siglip")
CLUSTER_KINDS = ("local", "debug", "slurm")
STORAGE_KINDS = ("local", "s3")
EMBEDDED_SOURCES = ("fashion_mnist", "shapes", "openclipart")  # data=embedded training sources
EMBEDDED_EVAL_SETS = ("fashion_mnist", "shapes", "shapes_heldout", "tuxpaint")  # ito_core/prep.py
DATA_NAMES = ("embedded", "webdataset", "raw")
RESIZE_MODES = ("center_crop", "shorter_side")
PRECISIONS = ("fp32", "bf16", "fp16")
EVAL_EXECUTORS = ("auto", "inprocess", "job")
EVAL_TASK_KEYS = ("zero_shot", "retrieval", "linear_probe", "modality_gap")
NONFINITE_POLICIES = ("skip", "stop")


# sbatch options the cluster config (or submitit itself) owns: cluster.extra_sbatch must not fight them.
MANAGED_SBATCH = {
    "job-name": "the job name", "nodes": "cluster.nodes", "ntasks-per-node": "cluster.tasks_per_node",
    "cpus-per-task": "cluster.cpus_per_task", "gpus-per-node": "cluster.gpus_per_node", "mem": "cluster.mem_gb",
    "time": "cluster.timeout_min", "partition": "cluster.partition", "account": "cluster.account",
    "qos": "cluster.qos", "constraint": "cluster.constraint", "signal": "the USR2 preemption signal",
    "output": "submitit's log paths", "error": "submitit's log paths", "open-mode": "submitit's log paths",
    "array": "submitit's job arrays",
}
SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
SLURM_NAME = re.compile(r"[A-Za-z0-9_.+@-]+")  # partition, account, QOS names (cluster/slurm_check.py: do they exist)


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"config {key}: {problem}; {fix}")


def _choice(value: str, key: str, allowed: Collection[str]) -> None:
    _require(value in allowed, key, f"{value!r} is not supported", f"choose one of {list(allowed)}")


def accumulation_steps(train: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step on each rank: batch_size = micro_batch_size x world_size x this."""
    per_rank = train.batch_size // world_size
    micro = train.micro_batch_size or per_rank
    _require(micro >= 1 and per_rank % micro == 0, "train.micro_batch_size",
             f"{train.micro_batch_size} does not divide the per-rank batch {per_rank} (train.batch_size="
             f"{train.batch_size} over {world_size} processes)",
             "pick a divisor of the per-rank batch, or 0 for no gradient accumulation")
    return per_rank // micro


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
    """``method.name`` and the settings each method needs (one branch per method)."""
    _choice(cfg.method.name, "method.name", METHODS)
    if cfg.method.name == "flair":
        _check_flair(cfg)
    if cfg.method.name == "oner":
        _check_oner(cfg)
    if cfg.method.name == "slip":
        _check_slip(cfg)


def _check_flair(cfg: RunConfig) -> None:
    ito, world_size = cfg.ito, cfg.cluster.nodes * cfg.cluster.tasks_per_node
    _require(ito.images == 1, "ito.images", f"method=flair trains on one image view, got {ito.images}",
             "set ito.images=1 (configs/method/flair.yaml does)")
    _require(ito.texts >= 2, "ito.texts", f"method=flair samples K >= 2 sub-captions per image, got {ito.texts}",
             "set ito.texts>=2 (the released recipe: 8)")
    _require(not fuses(ito), "ito.fusion", f"method=flair has no ITO fusion module, got ito.fusion={ito.fusion}",
             "set ito.fusion=none")
    _require(cfg.loss.name == "siglip", "loss.name", f"method=flair's sigmoid losses need the learnable logit bias "
             f"of loss=siglip, got {cfg.loss.name!r}", "set loss=siglip (configs/method/flair.yaml does)")
    _require(cfg.method.flair_heads >= 1 and cfg.model.embed_dim % cfg.method.flair_heads == 0,
             "method.flair_heads", f"{cfg.method.flair_heads} heads do not divide model.embed_dim="
             f"{cfg.model.embed_dim}", "pick a divisor (default 8)")
    per_rank = cfg.train.batch_size // world_size
    _require(cfg.train.micro_batch_size in (0, per_rank), "train.micro_batch_size",
             f"method=flair's loss calls the model's pooling module on the gathered texts, so accumulating "
             f"{cfg.train.micro_batch_size}-sample micro-batches would count its gradient once per micro-batch",
             "set train.micro_batch_size=0 (no accumulation) and lower train.batch_size if memory is short")


def _check_oner(cfg: RunConfig) -> None:
    """OneR reads one view and one caption per sample, has no fusion module and only InfoNCE losses."""
    m = cfg.method
    for key in ("images", "texts"):
        _require(getattr(cfg.ito, key) == 1, f"ito.{key}", f"{getattr(cfg.ito, key)} with method=oner (one image view "
                 "and one caption per sample)", f"set ito.{key}=1 (ito=clip, as configs/method/oner.yaml does)")
    _require(not fuses(cfg.ito), "ito.fusion", f"{cfg.ito.fusion!r} (weight {cfg.ito.fusion_weight}) with method=oner",
             "set ito.fusion=none: OneR has no fusion module (its CIC/CMC losses run joint sequences through the "
             "one tower)")
    _require(cfg.loss.name == "clip", "loss.name", f"{cfg.loss.name!r} with method=oner (InfoNCE losses only)",
             "set loss.name=clip")
    weights = {key: getattr(m, f"oner_{key}_weight") for key in ("itc", "xmc", "cic", "cmc")}
    for key, weight in weights.items():
        _require(weight >= 0, f"method.oner_{key}_weight", f"{weight}", "use a weight >= 0 (0 skips that loss)")
    _require(any(w > 0 for w in weights.values()), "method.oner_*_weight", "every OneR loss weight is 0",
             "give at least one of oner_itc/xmc/cic/cmc_weight a positive weight")
    _require(weights["xmc"] == 0 or cfg.train.batch_size >= 3, "train.batch_size",
             f"{cfg.train.batch_size} with method.oner_xmc_weight > 0 (with 2 samples XMC's query of one sample "
             "is the key of the other)", "use train.batch_size >= 3, or method.oner_xmc_weight=0")


def _check_slip(cfg: RunConfig) -> None:
    m = cfg.method
    _require(cfg.ito.images == 3, "ito.images", f"method=slip got {cfg.ito.images} image view(s)",
             "set ito.images=3: view 0 for the CLIP loss, views 1-2 for SimCLR (configs/method/slip.yaml does)")
    _require(not fuses(cfg.ito), "ito.fusion", "method=slip trains no fusion module",
             "set ito.fusion=none (configs/method/slip.yaml does), or use method=ito for fusion")
    _require(cfg.loss.name == "clip", "loss.name", f"method=slip is CLIP's InfoNCE + SimCLR, got {cfg.loss.name!r}",
             "set loss=clip")
    for key in ("slip_hidden", "slip_dim"):
        _require(getattr(m, key) >= 1, f"method.{key}", f"{getattr(m, key)}", "use a positive width")
    _require(m.slip_temperature > 0, "method.slip_temperature", f"{m.slip_temperature}", "use a temperature > 0, "
             "SLIP's is 0.1")
    _require(m.slip_weight > 0, "method.slip_weight", f"{m.slip_weight}",
             "use a weight > 0 (SLIP's is 1.0), or method=clip for no SimCLR term")


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
    """The ``cluster.*`` values on their own (``cluster/executors.py`` checks them again for a derived config)."""
    _choice(cfg.kind, "cluster.kind", CLUSTER_KINDS)
    for key, low in (("nodes", 1), ("tasks_per_node", 1), ("gpus_per_node", 0), ("cpus_per_task", 1),
                     ("mem_gb", 0), ("timeout_min", 1), ("max_requeues", 0), ("prep_tasks", 1),
                     ("torch_threads", 0)):
        value = getattr(cfg, key)
        _require(isinstance(value, int) and value >= low, f"cluster.{key}", f"{value!r}", f"use an integer >= {low}")
    _require(isinstance(cfg.progress_every_s, int | float) and cfg.progress_every_s >= 0, "cluster.progress_every_s",
             f"{cfg.progress_every_s!r}", "use seconds >= 0 (0 sends every progress line to Prefect)")
    if cfg.kind != "slurm":
        _require(cfg.nodes == 1, "cluster.nodes", f"{cfg.nodes} nodes with cluster.kind={cfg.kind}",
                 "use cluster.kind=slurm for multi-node jobs, or cluster.nodes=1")
    if cfg.kind == "debug":
        _require(cfg.tasks_per_node == 1, "cluster.tasks_per_node", "the debug executor runs one in-process task",
                 "use cluster.kind=local for several processes")
    if cfg.gpus_per_node:
        _require(cfg.tasks_per_node == cfg.gpus_per_node, "cluster.tasks_per_node",
                 f"{cfg.tasks_per_node} tasks for {cfg.gpus_per_node} GPUs per node (one training process per GPU)",
                 f"set cluster.tasks_per_node={cfg.gpus_per_node}")
    check_job_folder(Path(cfg.work_dir).resolve(), kind=cfg.kind)
    for key in ("partition", "account", "qos"):  # a partition may be a list: "gpu,gpu-long"
        value = getattr(cfg, key)
        names = value.split(",") if key == "partition" else [value]
        _require(not value or all(SLURM_NAME.fullmatch(name) for name in names), f"cluster.{key}",
                 f"{value!r} is not a SLURM {key} name",
                 "use a name `sinfo`/`sacctmgr` lists (letters, digits, '_', '-', '.'), or '' for the default")
    _require("\n" not in cfg.constraint, "cluster.constraint", "contains a newline", "remove it")
    for raw, value in cfg.extra_sbatch.items():
        key = str(raw).replace("_", "-")
        _require(bool(SBATCH_KEY.match(key)), f"cluster.extra_sbatch.{raw}", "is not an sbatch long option name",
                 "use names like 'mail-type' or 'exclusive' (no leading dashes)")
        _require(key not in MANAGED_SBATCH, f"cluster.extra_sbatch.{raw}",
                 f"--{key} is set from {MANAGED_SBATCH.get(key)}", "set that instead")
        _require(isinstance(value, str | int | float | bool) and "\n" not in str(value),
                 f"cluster.extra_sbatch.{raw}", f"{value!r}", "use a one-line string, number or true")


def check_job_folder(folder: Path, *, kind: str) -> None:
    """A job folder sbatch and SLURM can use (``cluster.work_dir`` + the run key)."""
    # sbatch reads one option per line: a newline in a path or value would end the #SBATCH line.
    _require("\n" not in str(folder), "cluster.work_dir", f"job folder {str(folder)!r} contains a newline",
             "pick a work_dir (and run key) without newlines")
    if kind == "slurm":  # SLURM reads '%' in log paths as a pattern and fails to open paths with a backslash
        bad = sorted({c for c in str(folder) if c in "%\\"})
        _require(not bad, "cluster.work_dir", f"job folder {str(folder)!r} contains {bad}",
                 "pick a work_dir (and run key) without '%' or backslashes")


def config_warnings(cfg: RunConfig) -> list[str]:
    """Valid settings that are probably not what the user meant, one line each (train logs them, plan prints
    them)."""
    warmup, steps, out = cfg.train.warmup_steps, cfg.train.steps, []
    if steps > 1 and warmup >= steps:
        out.append(f"config train.warmup_steps={warmup} equals train.steps: the whole run is linear warm-up, the "
                   "learning rate only reaches train.lr at the last step and never decays; lower train.warmup_steps")
    if cfg.method.name == "slip" and accumulation_steps(cfg.train, cfg.cluster.nodes * cfg.cluster.tasks_per_node) > 1:
        out.append("config method=slip with train.micro_batch_size accumulation: the SimCLR head's BatchNorm "
                   "statistics are those of each micro-batch across ranks, not of the whole batch; set "
                   "train.micro_batch_size=0 for SLIP's global-batch statistics")
    if cfg.method.name in FLOPS_UNCOUNTED:
        out.append(f"config method.name={cfg.method.name}: the FLOP count behind `ito-sweep plan`'s GPU-hours and "
                   f"the logged MFU covers the towers only, not {FLOPS_UNCOUNTED[cfg.method.name]}; time a few steps "
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


