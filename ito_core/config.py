"""Config schemas: one dataclass per Hydra group, validated before any job starts.

Values live in ``configs/`` (YAML); the defaults below only exist so the schema is complete and
must match the YAML files (a test checks it). ``load_config`` composes the Hydra tree, merges it
onto these schemas (unknown keys and wrong types fail there) and runs ``validate``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ito_core.config_errors import omegaconf_message, override_error, unknown_key_message

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class ModelConfig:
    name: str = MISSING
    embed_dim: int = 512  # joint embedding width (output of both projections)
    image_size: int = 224  # input resolution of the image tower
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    context_length: int = 77  # text tokens, SOT/EOT included
    vocab_size: int = 49408  # CLIP BPE vocabulary
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    mlp_ratio: float = 4.0
    init_logit_scale: float = 2.6592  # log(1 / 0.07), as CLIP


@dataclass
class ItoConfig:
    images: int = 2  # M: augmented image views per sample
    texts: int = 1  # N: caption variants per sample
    fusion: str = "transformer"  # training-time fusion module: none | transformer
    fusion_depth: int = 2
    fusion_width: int = 0  # 0 = the model's embed_dim
    fusion_heads: int = 8
    readout: str = "cls"  # fused vector read-out: cls | mean | token
    fusion_weight: float = 2.0  # lambda in L = L_align + lambda * L_fusion


@dataclass
class LossConfig:
    name: str = "clip"  # alignment loss: clip (InfoNCE) | siglip
    siglip_init_bias: float = -10.0


@dataclass
class DataConfig:
    name: str = MISSING
    sources: list[str] = field(default_factory=list)  # embedded sets: fashion_mnist, shapes
    shards: list[str] = field(default_factory=list)  # webdataset shard URLs (name=webdataset)
    image_size: int = 64  # prep stores images at this size (shorter side)
    samples_per_shard: int = 2000
    max_train_samples: int = 0  # 0 = all; caps each embedded source
    shapes_train: int = 12000  # procedural shapes generated for training
    shapes_eval: int = 1000  # held-out procedural shapes for retrieval
    jpeg_quality: int = 95
    num_workers: int = 1  # DataLoader workers of each training process
    # name=raw: prep reads your images + captions and writes the shards (ito_core/data/raw_prep.py).
    input_kind: str = ""  # img2dataset (its tars) | table (csv/tsv/parquet of image paths or URLs) | folder
    input: str = ""  # local path or s3:// URL; img2dataset: tar brace pattern or a folder of tars
    caption_columns: list[str] = field(default_factory=list)  # table columns / img2dataset json keys or "txt"
    image_column: str = ""  # table: the column of image paths or s3:// URLs (relative = to the table's folder)
    resize_mode: str = "center_crop"  # center_crop (square image_size) | shorter_side (keep aspect, no upscaling)
    min_image_size: int = 0  # skip images whose shorter side is smaller (0 = no limit)
    max_aspect_ratio: float = 0.0  # skip images with long/short side above this (0 = no limit)
    max_pixels: int = 89478485  # skip larger images as decompression bombs (PIL's default limit)
    prep_workers: int = 1  # prep processes (decode + resize + write, one shard per task)


@dataclass
class TrainConfig:
    steps: int = 300  # optimizer steps (a skipped non-finite step counts: it consumed its batch)
    batch_size: int = 128  # global batch = micro_batch_size x ranks x gradient accumulation steps
    micro_batch_size: int = 0  # samples per rank per forward/backward; 0 = batch_size / ranks (no accumulation)
    lr: float = 1e-3
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    nonfinite: str = "skip"  # a NaN/inf loss: skip (no update, counted) | stop (raise at once)
    max_skipped_steps: int = 10  # with nonfinite=skip: stop once more steps than this were skipped
    max_bad_shards: int = 0  # missing/truncated shards skipped per epoch; 0 = fail (skipping changes the data)
    activation_checkpointing: bool = False  # recompute each transformer block in backward (less memory)
    compile: bool = False  # torch.compile the model (DeepSpeed engine.compile); slow first steps on CPU
    peak_tflops: float = 0.0  # peak TFLOP/s of one device for MFU; 0 = env ITO_PEAK_TFLOPS, else no MFU


@dataclass
class DeepSpeedConfig:
    zero_stage: int = 2
    precision: str = "fp32"  # fp32 | bf16 (DeepSpeed bf16) | fp16 (DeepSpeed dynamic loss scaling, GPU only)


@dataclass
class ClusterConfig:
    kind: str = "local"  # local | debug | slurm
    nodes: int = 1
    tasks_per_node: int = 1  # training processes per node (one per GPU on a GPU cluster)
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_gb: int = 0  # 0 = scheduler default
    timeout_min: int = 60
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    max_requeues: int = 3
    work_dir: str = ".ito-sweep"  # submitit job folders + local staging; on a shared filesystem for SLURM
    extra_sbatch: dict[str, Any] = field(default_factory=dict)


@dataclass
class StorageConfig:
    kind: str = "local"  # local | s3
    root: str = "outputs"  # local directory, or s3://bucket/prefix
    endpoint_url: str = ""  # S3-compatible endpoint; empty = AWS
    region: str = ""
    retry_deadline_s: float = 120.0  # how long S3 calls retry transient failures before failing


@dataclass
class EvalConfig:
    zero_shot: str = "fashion_mnist"  # zero-shot set: embedded or a key of eval.datasets ("" to skip)
    retrieval: str = "shapes"  # captioned retrieval set: embedded or a key of eval.datasets ("" to skip)
    linear_probe: str = "fashion_mnist"  # labelled set for the logistic-regression probe on image features ("" to skip)
    modality_gap: str = "shapes"  # captioned set for the modality-gap metrics and UMAP plot ("" to skip)
    probe_val_fraction: float = 0.2  # share of each class the probe's C is picked on
    probe_test_fraction: float = 0.5  # share of each class the probe is scored on (never fit on)
    probe_c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0])  # C sweep
    umap_points: int = 1000  # per modality in the modality-gap UMAP plot (0 = no plot)
    max_samples: int = 2000  # per eval set (0 = all); a user set keeps an even spread, not its first N
    batch_size: int = 256
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast while encoding; fp16 needs CUDA)
    executor: str = "inprocess"  # inprocess (the flow's own process) | job (a one-task job on cluster.kind)
    datasets: dict[str, str] = field(default_factory=dict)  # user eval sets: name -> "<layout>:<path>[?images=..]"


@dataclass
class WandbConfig:
    mode: str = "offline"  # online | offline | disabled
    project: str = "ito-sweep"
    group: str = ""  # W&B group; the sweep flow sets it to the sweep name


PLOT_METRICS = ("*/acc1", "*/lp_acc1", "*/image_retrieval_recall@1", "*/text_retrieval_recall@1",
                "*/centroid_distance", "final_align_loss")


@dataclass
class ReportConfig:
    # Eval metrics in the sweep report, as "<eval set>/<metric>" patterns ("*" matches any set: "*/acc1");
    # empty = every metric the eval records hold.
    metrics: list[str] = field(default_factory=list)
    # The report columns plotted against each grid axis, same patterns (losses too: final_align_loss).
    plot_metrics: list[str] = field(default_factory=lambda: list(PLOT_METRICS))


@dataclass
class PlanConfig:
    mfu: float = 0.4  # ito-sweep plan: assumed model FLOPs utilisation for GPU-hours at the device's peak
    bench: str = ""  # ito-sweep plan: a bench/train_step.py --json result to price at its measured throughput


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ito: ItoConfig = field(default_factory=ItoConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    seed: int = 0
    sweep: dict[str, Any] = field(default_factory=dict)  # grid axes (Hydra sweeper syntax)


def _register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)


_register_schemas()

FUSION_KINDS = ("none", "transformer")
READOUTS = ("cls", "mean", "token")
LOSS_NAMES = ("clip", "siglip")
CLUSTER_KINDS = ("local", "debug", "slurm")
STORAGE_KINDS = ("local", "s3")
EMBEDDED_SOURCES = ("fashion_mnist", "shapes")
DATA_NAMES = ("embedded", "webdataset", "raw")
RAW_INPUT_KINDS = ("img2dataset", "table", "folder")
RESIZE_MODES = ("center_crop", "shorter_side")
PRECISIONS = ("fp32", "bf16", "fp16")
EVAL_LAYOUTS = ("folder", "imagenet", "cifar10", "cifar100", "karpathy", "wds")  # ito_core/data/eval_sets.py
EVAL_EXECUTORS = ("inprocess", "job")
EVAL_TASK_KEYS = ("zero_shot", "retrieval", "linear_probe", "modality_gap")
NONFINITE_POLICIES = ("skip", "stop")


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"config {key}: {problem}; {fix}")


def _choice(value: str, key: str, allowed: tuple[str, ...]) -> None:
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
    """Raise ``ValueError`` naming the key and the fix for any impossible value."""
    m, ito, tr = cfg.model, cfg.ito, cfg.train
    for key in ("embed_dim", "image_size", "patch_size", "vision_width", "vision_layers", "text_width",
                "text_layers", "context_length"):
        _require(getattr(m, key) > 0, f"model.{key}", "must be > 0", "set a positive integer")
    _require(m.image_size % m.patch_size == 0, "model.image_size",
             f"{m.image_size} is not a multiple of model.patch_size={m.patch_size}", "pick a multiple")
    _require(m.vision_width % m.vision_heads == 0, "model.vision_heads",
             f"vision_width={m.vision_width} is not divisible by {m.vision_heads}", "pick a divisor")
    _require(m.text_width % m.text_heads == 0, "model.text_heads",
             f"text_width={m.text_width} is not divisible by {m.text_heads}", "pick a divisor")
    _require(ito.images >= 1, "ito.images", f"M={ito.images}", "use at least 1 image view")
    _require(ito.texts >= 1, "ito.texts", f"N={ito.texts}", "use at least 1 text variant")
    _choice(ito.fusion, "ito.fusion", FUSION_KINDS)
    _choice(ito.readout, "ito.readout", READOUTS)
    _require(ito.fusion_weight >= 0, "ito.fusion_weight", f"lambda={ito.fusion_weight} < 0", "use lambda >= 0")
    if ito.fusion != "none":
        _require(ito.images * ito.texts >= 2, "ito.fusion",
                 f"fusion needs >= 2 fused views per sample for its contrastive loss, got M*N="
                 f"{ito.images}*{ito.texts}", "set ito.images>=2 or ito.texts>=2, or ito.fusion=none")
        width = ito.fusion_width or m.embed_dim
        _require(ito.fusion_depth >= 1, "ito.fusion_depth", f"{ito.fusion_depth}", "use >= 1 layer")
        _require(width % ito.fusion_heads == 0, "ito.fusion_heads",
                 f"fusion width {width} is not divisible by {ito.fusion_heads}", "pick a divisor")
    _choice(cfg.loss.name, "loss.name", LOSS_NAMES)
    _require(tr.steps >= 1, "train.steps", f"{tr.steps}", "use >= 1")
    _require(tr.lr > 0, "train.lr", f"{tr.lr}", "use a positive learning rate")
    _require(0 <= tr.warmup_steps <= tr.steps, "train.warmup_steps", f"{tr.warmup_steps} not in [0, steps]",
             "use 0 <= warmup_steps <= train.steps")
    world = cfg.cluster.nodes * cfg.cluster.tasks_per_node
    _require(tr.batch_size >= 2 and tr.batch_size % world == 0, "train.batch_size",
             f"{tr.batch_size} must be >= 2 and divisible by the {world} training processes",
             "pick a multiple of cluster.nodes * cluster.tasks_per_node")
    accumulation_steps(tr, world)  # raises for a micro batch that does not divide the per-rank batch
    _require(tr.grad_clip >= 0, "train.grad_clip", f"{tr.grad_clip}", "use a norm > 0, or 0 to disable clipping")
    _require(tr.checkpoint_every >= 1, "train.checkpoint_every", f"{tr.checkpoint_every}", "use >= 1")
    _require(tr.keep_checkpoints >= 1, "train.keep_checkpoints", f"{tr.keep_checkpoints}", "keep >= 1")
    _choice(tr.nonfinite, "train.nonfinite", NONFINITE_POLICIES)
    _require(tr.max_skipped_steps >= 0, "train.max_skipped_steps", f"{tr.max_skipped_steps}", "use >= 0")
    _require(tr.max_bad_shards >= 0, "train.max_bad_shards", f"{tr.max_bad_shards}", "use >= 0")
    _require(tr.peak_tflops >= 0, "train.peak_tflops", f"{tr.peak_tflops}", "use the device's peak, or 0 if unknown")
    _require(cfg.deepspeed.zero_stage in (0, 1, 2, 3), "deepspeed.zero_stage",
             f"{cfg.deepspeed.zero_stage}", "choose one of [0, 1, 2, 3]")
    _choice(cfg.deepspeed.precision, "deepspeed.precision", PRECISIONS)
    _choice(cfg.cluster.kind, "cluster.kind", CLUSTER_KINDS)
    _require(cfg.cluster.nodes >= 1 and cfg.cluster.tasks_per_node >= 1, "cluster.tasks_per_node",
             "nodes and tasks_per_node must be >= 1", "set both to positive integers")
    _choice(cfg.storage.kind, "storage.kind", STORAGE_KINDS)
    _require(cfg.storage.kind == "s3" or not cfg.storage.root.startswith("s3://"), "storage.root",
             f"{cfg.storage.root!r} with storage.kind=local", "add storage=s3 (or use a local directory)")
    if cfg.storage.kind == "s3":
        bucket = cfg.storage.root.removeprefix("s3://").split("/", 1)[0]
        _require(cfg.storage.root.startswith("s3://") and bool(bucket), "storage.root",
                 f"{cfg.storage.root!r} is not an s3:// URL with a bucket", "set storage.root=s3://BUCKET/PREFIX")
    _validate_data(cfg.data)
    _validate_eval(cfg.eval)
    _choice(cfg.wandb.mode, "wandb.mode", ("online", "offline", "disabled"))
    _require(0 < cfg.plan.mfu <= 1, "plan.mfu", f"{cfg.plan.mfu}", "use a fraction in (0, 1], e.g. 0.4 for 40 %")
    return cfg


def _validate_eval(ev: EvalConfig) -> None:
    """Eval settings that need no data to check; a set's files are checked by prep."""
    _choice(ev.precision, "eval.precision", PRECISIONS)
    _choice(ev.executor, "eval.executor", EVAL_EXECUTORS)
    for name, spec in ev.datasets.items():
        key = f"eval.datasets.{name}"
        _require(re.fullmatch(r"[A-Za-z0-9_-]+", name) is not None, key, "the set name must be a store-key segment",
                 "use letters, digits, '_' and '-' only")
        _require(name not in EMBEDDED_SOURCES, key, f"{name!r} is an embedded set", "pick another name")
        layout, sep, path = spec.partition(":")
        _require(bool(sep and path) and layout in EVAL_LAYOUTS, key, f"{spec!r} is not '<layout>:<path>' with a "
                 "known layout", f"write e.g. imagenet:/data/imagenet/val; layouts: {list(EVAL_LAYOUTS)}")
    for task in EVAL_TASK_KEYS:
        name = getattr(ev, task)
        _require(not name or name in EMBEDDED_SOURCES or name in ev.datasets, f"eval.{task}",
                 f"{name!r} is neither an embedded set {list(EMBEDDED_SOURCES)} nor a key of eval.datasets",
                 f"add +eval.datasets.{name}=<layout>:<path>, or set eval.{task}='' to skip the task")


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


def unknown_keys(cfg: DictConfig | dict, schema: type = RunConfig, prefix: str = "") -> list[str]:
    """Keys of ``cfg`` the dataclass ``schema`` has no field for (dict-typed fields take any key)."""
    hints, unknown = get_type_hints(schema), []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in hints:
            unknown.append(name)
        elif is_dataclass(hints[key]) and isinstance(value, dict | DictConfig):
            unknown += unknown_keys(value, hints[key], f"{name}.")
    return unknown


def check_known_keys(cfg: DictConfig | dict) -> None:
    """Refuse keys the schema lacks. Merging keeps them quietly when they came with a ``+`` override (Hydra types
    the group's node, and OmegaConf then lets the extra key through), so they are looked for by name."""
    if unknown := unknown_keys(cfg):
        raise ValueError("; ".join(unknown_key_message(key, RunConfig) for key in unknown)
                         + " (a '+' override adds keys only to dict-typed ones such as eval.datasets)")


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Merge a plain or Omega config onto the schema (unknown keys/wrong types fail) and validate."""
    check_known_keys(cfg)
    schema = OmegaConf.structured(RunConfig)
    try:
        merged = OmegaConf.merge(schema, cfg)
        run_cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ValueError(omegaconf_message(err)) from None
    assert isinstance(run_cfg, RunConfig)
    return validate(run_cfg)


def _compose(overrides: list[str] | tuple[str, ...], config_name: str, *, return_hydra_config: bool = False
             ) -> DictConfig:
    """Hydra's composition, its errors turned into a ``ValueError`` naming the override and the fix."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    except (ConfigCompositionException, OverrideParseException) as err:
        if message := override_error(err, RunConfig, list(overrides)):
            raise ValueError(message) from None
        # Hydra's "To append to your config use +key=..." is dropped: a key the schema lacks is refused either way.
        what = str(err).split("\nTo append")[0]
        cause = f" ({' '.join(str(err.__cause__).split())})" if err.__cause__ else ""
        raise ValueError(f"config overrides {list(overrides)}: {what}{cause}; see configs/ for valid groups "
                         "and keys") from None
    except OmegaConfBaseException as err:
        raise ValueError(omegaconf_message(err)) from None


def load_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> RunConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides into a validated ``RunConfig``."""
    cfg = _compose(overrides, config_name)
    OmegaConf.resolve(cfg)
    return to_run_config(cfg)


def hydra_sweeper_params(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> dict[str, str]:
    """``hydra.sweeper.params`` of the composed config (Hydra's own way to keep a grid in config)."""
    cfg = _compose(overrides, config_name, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper).get("params") or {}
    return {str(key): str(value) for key, value in params.items()}


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    # A validated RunConfig holds plain values only, so this equals OmegaConf's
    # to_container(structured(cfg)) (a test checks), at 0.1 ms instead of 12: run keys hash it per grid point.
    return asdict(cfg)


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (a config subset): names runs and cache keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
