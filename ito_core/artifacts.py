"""Every store key in one place: where each artifact of a sweep lives, and whether it is committed.

A store (local folder or S3 prefix) holds::

    data/train-<hash>/               train shards + manifest.json (prep), shared by runs with the same data;
                                     data=raw adds a sidecar (+ records log) per shard and prep-tasks/ markers
    data/eval-<set>-<hash>/          one eval set's shards + manifest.json (prep)
    runs/<hash>/config.json          the run's resolved config
    runs/<hash>/checkpoints/<tag>/   DeepSpeed shards + manifest.json per committed tag (train)
    runs/<hash>/train/               the training summary: history, final checkpoint tag (train)
    runs/<hash>/model/               the stripped dual encoder, OpenCLIP export, model card (strip)
    runs/<hash>/eval/                eval records + UMAP plots (eval)
    sweeps/<name>/                   report.md, report.csv, results.json, arms.csv, comparisons.csv, plots (report)
    .preflight/<token>/              a probe object, written and deleted at once (preflight)

Keys hash the inputs that shape an artifact's bytes, never the flow run, so equal inputs share an artifact and a
committed one (its manifest exists) is never rebuilt. Torch-free: the flow process names runs with it. No other
module formats a store path (a source scan in tests/unit/test_artifacts.py checks it): they ask here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ito_core.config import DataConfig, EvalConfig, RunConfig, as_dict, config_hash, eval_task_sets
from ito_core.config.validation import EVAL_TASK_KEYS
from ito_core.methods.registry import method_identity
from ito_core.storage import ArtifactStore, manifest_key

RUNS, DATA, SWEEPS = "runs", "data", "sweeps"  # the store's top-level folders
PREFLIGHT = ".preflight"  # scratch folder under the root for the storage preflight's probe
PREP_TASKS = "prep-tasks"  # under a data key: one done-marker per prep array task
# Bump when the bytes prep writes change for the same config (new resize, new caption templates).
PREP_VERSION = 3  # 2: shapes never draw the held-out colour x shape pairs; data=embedded gains openclipart;
# 3: Open Clip Art drawings are box-shrunk to at most 512 px before prep resizes them
RAW_PREP_VERSION = 2  # data=raw; 2: folders and img2dataset tars also take .ppm .pgm .tif .tiff images
# data=raw fields that shape the output bytes (not prep_workers / num_workers: they change no byte).
RAW_FIELDS = ("name", "input_kind", "input", "caption_columns", "image_column", "image_size", "resize_mode",
              "jpeg_quality", "min_image_size", "max_aspect_ratio", "max_pixels", "samples_per_shard")
EMBEDDED_FIELDS = ("name", "sources", "shards", "image_size", "samples_per_shard", "max_train_samples",
                   "shapes_train", "jpeg_quality")  # data=embedded|webdataset fields that shape the shards
RUN_IDENTITY = ("model", "ito", "loss", "train", "deepspeed", "seed")
# Options added after runs were first named, left out of a run's identity at their default (which trains as before
# they existed), so those runs keep their keys: section -> option -> default.
NEUTRAL_DEFAULTS = {"ito": {"patch_dropout": 0.0, "second_view_size": 0}}
DATA_IDENTITY = ("data", "eval", "storage")  # what prep's artifacts depend on
EVAL_ID_IGNORED = ("executor", "batch_size")  # where and in what chunks: the records do not depend on them


def committed(store: ArtifactStore, key: str) -> bool:
    """Whether the artifact at ``key`` is complete (its manifest, written last, exists)."""
    return store.exists(manifest_key(key))


def checkpoint_key(checkpoints: str, tag: str) -> str:
    """The folder of one checkpoint tag under a run's ``checkpoints`` key (``RunLayout.checkpoints``)."""
    return f"{checkpoints}/{tag}"


def read_manifest(store: ArtifactStore, key: str) -> Any:
    """The committed artifact's manifest; ``FileNotFoundError`` if it is not committed."""
    return store.read_json(manifest_key(key))


def raw_prep_config(data: DataConfig) -> dict[str, Any]:
    """What names (and is recorded in the manifest of) the shards prep makes from the user's own data."""
    return {"v": RAW_PREP_VERSION, **{name: getattr(data, name) for name in RAW_FIELDS}}


def train_data_key(data: DataConfig) -> str:
    if data.name == "raw":
        return f"{DATA}/train-{config_hash(raw_prep_config(data))}"
    fields = {k: getattr(data, k) for k in EMBEDDED_FIELDS}
    return f"{DATA}/train-{config_hash({'v': PREP_VERSION, **fields})}"


def eval_data_key(name: str, data: DataConfig, eval_cfg: EvalConfig) -> str:
    fields = {"name": name, "image_size": data.image_size, "max_samples": eval_cfg.max_samples,
              "shapes_eval": data.shapes_eval}
    if name in eval_cfg.datasets:  # a user set: its source spec decides what the shards hold
        fields["source"] = eval_cfg.datasets[name]
    return f"{DATA}/eval-{name}-{config_hash({'v': PREP_VERSION, **fields})}"


def prep_keys(data: DataConfig, eval_cfg: EvalConfig) -> dict[str, str]:
    """What prep commits: ``train`` and each eval set the eval tasks name -> its store key."""
    names = dict.fromkeys(name for task in EVAL_TASK_KEYS for name in eval_task_sets(eval_cfg, task))
    return {"train": train_data_key(data), **{name: eval_data_key(name, data, eval_cfg) for name in names}}


def run_key(cfg: RunConfig) -> str:
    """Runs are named by the hash of everything that changes their weights. The data enters as its prep
    key, so a new data option that leaves the shards alone (loader workers, eval sets) keeps run keys."""
    identity = {k: v for k, v in as_dict(cfg).items() if k in RUN_IDENTITY}
    for section, defaults in NEUTRAL_DEFAULTS.items():
        identity[section] = {k: v for k, v in identity[section].items() if k not in defaults or v != defaults[k]}
    identity["data"] = train_data_key(cfg.data)
    if (method := method_identity(cfg.method)) is not None:  # its spec says how the method names its runs
        identity["method"] = method
    return f"{RUNS}/{config_hash(identity)}"


def data_id(cfg: RunConfig) -> str:
    """Grid points with equal data, eval and storage configs share one prep."""
    return config_hash({k: v for k, v in as_dict(cfg).items() if k in DATA_IDENTITY})


def eval_id(cfg: RunConfig) -> str:
    """Hash of the eval settings the eval records depend on."""
    return config_hash({k: v for k, v in as_dict(cfg)["eval"].items() if k not in EVAL_ID_IGNORED})


def sweep_key(name: str) -> str:
    """Where a sweep's report goes."""
    return f"{SWEEPS}/{name}"


def member_key(key: str, name: str) -> str:
    """The key of the file ``name`` inside the artifact at ``key`` (a shard, its sidecar, a plot, the model card)."""
    return f"{key}/{name}"


def prep_task_marker(key: str, task: int, num_tasks: int) -> str:
    """Task ``task``'s done-marker under the data key ``key`` of a prep array of ``num_tasks`` tasks."""
    return f"{key}/{PREP_TASKS}/task-{task:04d}-of-{num_tasks:04d}.json"


def preflight_probe_key(token: str) -> str:
    """The folder the storage preflight writes its probe into and deletes again."""
    return f"{PREFLIGHT}/{token}"


@dataclass(frozen=True)
class RunLayout:
    """The folders (store keys) of one run, ``runs/<hash>``; each stage commits its own."""

    key: str

    @classmethod
    def named(cls, name: str) -> RunLayout:
        """The run whose folder under ``runs/`` is ``name`` (its hash)."""
        return cls(f"{RUNS}/{name}")

    @property
    def config(self) -> str:
        return f"{self.key}/config.json"

    @property
    def checkpoints(self) -> str:
        return f"{self.key}/checkpoints"

    @property
    def train(self) -> str:
        return f"{self.key}/train"

    @property
    def model(self) -> str:
        return f"{self.key}/model"

    @property
    def eval(self) -> str:
        return f"{self.key}/eval"

    @property
    def logs(self) -> str:
        """Copies of the run's job logs (every rank's stdout and stderr), one folder per stage."""
        return f"{self.key}/logs"

    def job_logs(self, stage: str) -> str:
        """The copies of one stage's job logs (``train``, ``eval``)."""
        return f"{self.logs}/{stage}"

    def checkpoint(self, tag: str) -> str:
        return checkpoint_key(self.checkpoints, tag)


# For messages that point at a folder of any run (``runs/<run>/checkpoints``), not at one run's.
ANY_RUN = RunLayout.named("<run>")


@dataclass(frozen=True)
class SweepLayout:
    """The files of one sweep's report, ``sweeps/<name>``."""

    key: str

    @property
    def results(self) -> str:
        return f"{self.key}/results.json"

    @property
    def report_csv(self) -> str:
        return f"{self.key}/report.csv"

    @property
    def arms_csv(self) -> str:
        return f"{self.key}/arms.csv"

    @property
    def comparisons_csv(self) -> str:
        return f"{self.key}/comparisons.csv"

    @property
    def report_md(self) -> str:
        return f"{self.key}/report.md"
