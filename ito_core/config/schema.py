"""Config schemas: one dataclass per Hydra group (registered in Hydra's ConfigStore).

Values live in ``configs/`` (YAML); the defaults below only exist so the schema is complete and
must match the YAML files (a test checks it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


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
    # The fusion loss's temperature: live (ITO's code: the loss also trains CLIP's logit scale) | detached
    fusion_scale: str = "live"
    # Positives of the fusion loss with N > 1 captions: view_mean (ITO's code: each view's fused vectors averaged
    # over the captions, renormalised, NT-Xent across the M views) | supcon (SupCon over all M x N fused vectors)
    fusion_positives: str = "view_mean"
    # Image tokens entering the fusion module: all (CLS + every patch) | cls (CLS only) | pool<k> (CLS + the patch
    # grid average-pooled to k tokens, k a square number, e.g. pool4)
    fusion_image_tokens: str = "all"
    # Cheaper training views (docs/METHOD.md), training only: the stripped model and eval see every patch at
    # model.image_size. Share of each view's patch tokens dropped at random, CLS kept (FLIP; OpenCLIP's
    # patch_dropout): 0 = none, 0.5 = FLIP's
    patch_dropout: float = 0.0
    # Pixel side of image views 2..M, resized from the augmented crop (multi-crop; position embeddings
    # interpolated to the smaller grid): 0 = model.image_size, else a multiple of model.patch_size
    second_view_size: int = 0


@dataclass
class MethodConfig:
    """``method.name`` (clip | siglip | slip | flair | oner | ito, or a registered one): the system being trained;
    ``configs/method/<name>.yaml`` sets the ito/loss groups it needs. Each method's options live in its own subclass
    (``ito_core/methods/<name>/``), whose fields are the ``method.<option>`` keys users write."""

    name: str = "ito"
    # Options of other methods set in the same config (a sweep over methods sets each method's options once),
    # checked by their method and unused by this run: ito_core.methods.registry.method_config.
    others: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    name: str = "clip"  # alignment loss: clip (InfoNCE) | siglip
    siglip_init_bias: float = -10.0


@dataclass
class DataConfig:
    name: str = MISSING
    sources: list[str] = field(default_factory=list)  # embedded training sets: fashion_mnist, shapes, openclipart
    shards: list[str] = field(default_factory=list)  # webdataset shard URLs (name=webdataset)
    image_size: int = 64  # prep stores images at this size (shorter side)
    samples_per_shard: int = 2000
    max_train_samples: int = 0  # 0 = all; caps each embedded source
    shapes_train: int = 12000  # procedural shapes generated for training
    shapes_eval: int = 1000  # procedural shapes in each shapes eval set (shapes, shapes_heldout)
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
    # storage=s3: upload checkpoints on a background thread while training goes on; the tag is committed once every
    # node's upload ended (false: every rank waits for the uploads in the save)
    async_checkpoint: bool = True
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
    kind: str = "local"  # an executor of cluster/executors: local | debug | slurm
    nodes: int = 1
    tasks_per_node: int = 1  # training processes per node (one per GPU on a GPU cluster)
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    # torch's intra-op threads in each job process; 0 = cpus_per_task less one per DataLoader worker (at least 1),
    # so jobs sharing a machine do not oversubscribe it
    torch_threads: int = 0
    mem_gb: int = 0  # 0 = scheduler default
    timeout_min: int = 60
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    max_requeues: int = 3
    prep_tasks: int = 1  # kind=slurm: data=raw prep runs as a job array this wide (one CPU task each, no GPU)
    # Rank 0's progress lines (a step's loss, a checkpoint) reach Prefect's log at most once per this many seconds
    # per job; warnings and errors always. 0 = every line. The full rank logs stay in work_dir.
    progress_every_s: float = 30.0
    work_dir: str = ".ito-sweep"  # submitit job folders + local staging; on a shared filesystem for SLURM
    # Node-local folder where training stages checkpoints (S3 transfers, universal conversion); read on the node.
    # Empty: $TMPDIR, else /tmp.
    scratch_dir: str = ""
    extra_sbatch: dict[str, Any] = field(default_factory=dict)
    # kind=slurm: at most this many sbatch calls a second from the flow process (a sweep submits in bursts; 5 =
    # submitit's own 0.2 s between submissions, which it applies per executor, not per process)
    submit_rate_per_s: float = 5.0
    # kind=slurm: how long sbatch is retried with backoff while the controller answers with a transient error
    submit_retry_s: float = 600.0
    # how long a training task retries taking its slot of the server-wide ito-train limit while the Prefect server
    # cannot be reached (a restart); 0 = one try
    slot_retry_s: float = 600.0


@dataclass
class StorageConfig:
    kind: str = "local"  # local | s3
    root: str = "outputs"  # local directory, or s3://bucket/prefix
    endpoint_url: str = ""  # S3-compatible endpoint; empty = AWS
    region: str = ""
    retry_deadline_s: float = 120.0  # how long S3 calls retry transient failures before failing


# Defaults of the task keys of EvalConfig: each names a list of eval sets, or one set as a string.
ZERO_SHOT_SETS = ["fashion_mnist", "tuxpaint", "shapes_heldout"]
RETRIEVAL_SETS = ["shapes", "tuxpaint"]


@dataclass
class EvalConfig:
    # Each task key names the eval sets it scores: a list, or one name (eval.zero_shot=imagenet); a set is embedded
    # (fashion_mnist, shapes, shapes_heldout, tuxpaint) or a key of eval.datasets; "" or [] skips the task.
    zero_shot: Any = field(default_factory=lambda: list(ZERO_SHOT_SETS))  # labelled sets with class names
    retrieval: Any = field(default_factory=lambda: list(RETRIEVAL_SETS))  # captioned sets
    linear_probe: Any = field(default_factory=lambda: ["fashion_mnist"])  # labelled sets, logistic regression
    modality_gap: Any = field(default_factory=lambda: ["shapes"])  # captioned sets: gap metrics + UMAP plot
    probe_val_fraction: float = 0.2  # share of each class the probe's C is picked on
    probe_test_fraction: float = 0.5  # share of each class the probe is scored on (never fit on)
    probe_c_grid: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0])  # C sweep
    umap_points: int = 1000  # per modality in the modality-gap UMAP plot (0 = no plot)
    max_samples: int = 2000  # per eval set (0 = all); a user set keeps an even spread, not its first N
    batch_size: int = 256
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast while encoding; fp16 needs CUDA)
    # auto (a job when cluster.kind runs jobs on other machines, e.g. slurm; else inprocess) | inprocess (the flow's
    # own process) | job (a one-task job on cluster.kind, with one GPU if training had any);
    # cluster.executors.eval_executor resolves it
    executor: str = "auto"
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
    # The grid axis whose points are replicates of one arm: the report gives each arm's mean and interval over it
    # and compares arms paired by it. No such axis: one row per point (n=1) and a line saying so.
    replicate_axis: str = "seed"
    # The arm every other arm is compared with, as "axis=value" pairs ("method=clip"); each arm is compared with
    # the arm that differs from it only in these axes. Empty: the first value of the first non-replicate axis.
    baseline: str = ""


@dataclass
class PlanConfig:
    mfu: float = 0.4  # ito-sweep plan: assumed model FLOPs utilisation for GPU-hours at the device's peak
    bench: str = ""  # ito-sweep plan: a bench/train_step.py --json result to price at its measured throughput


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
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


@dataclass
class RunSchema(RunConfig):
    """What Hydra composes onto: a ``RunConfig`` whose ``method`` section is an open dict, because its keys are
    those of the chosen method (``config.loading`` turns it into that method's dataclass)."""

    method: dict[str, Any] = field(default_factory=lambda: {"name": "ito"})  # type: ignore[assignment]


def _register_schemas() -> None:
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunSchema)


_register_schemas()


def eval_task_sets(eval_cfg: EvalConfig, task: str) -> list[str]:
    """The eval sets ``eval.<task>`` names, as a list: it holds a list or one name ("" = none)."""
    value = getattr(eval_cfg, task)
    names = [value] if isinstance(value, str) else list(value)
    return [name for name in names if name]


def fuses(ito: ItoConfig) -> bool:
    """Whether training builds and trains a fusion module: a fusion kind with a positive weight lambda."""
    return ito.fusion != "none" and ito.fusion_weight > 0
