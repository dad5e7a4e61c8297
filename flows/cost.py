"""What a grid point's training costs: model FLOPs x samples -> device-hours.

Training FLOPs per sample come from ``ito_core.flops`` (every caption at the full context: an upper bound, the
loader trims padding). A device sustains either ``mfu`` x its peak (``train.peak_tflops``, env
``ITO_PEAK_TFLOPS`` or ``--peak-tflops``) or the FLOP/s a ``bench/train_step.py --json`` file measured for the
same model. Device-hours assume the job's devices scale linearly (no communication cost): a lower bound
for multi-node jobs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ito_core.config import ModelConfig, RunConfig, fuses, load_config
from ito_core.flops import peak_flops, train_flops_per_sample


@dataclass(frozen=True)
class Throughput:
    """FLOP/s one device sustains, and where the figure comes from (printed beside the hours)."""

    flops_per_s: float
    source: str


@dataclass(frozen=True)
class Cost:
    train_flops_per_sample: float
    samples: int  # train.steps x train.batch_size
    devices: int  # training processes: cluster.nodes x cluster.tasks_per_node
    device_hours: float | None  # None when no throughput is known

    @property
    def total_flops(self) -> float:
        return self.train_flops_per_sample * self.samples

    @property
    def wall_hours(self) -> float | None:
        return None if self.device_hours is None else self.device_hours / self.devices


def point_cost(cfg: RunConfig, throughput: Throughput | None) -> Cost:
    flops = train_flops_per_sample(cfg.model, cfg.ito)
    samples = cfg.train.steps * cfg.train.batch_size
    hours = None if throughput is None else flops * samples / throughput.flops_per_s / 3600
    return Cost(flops, samples, cfg.cluster.nodes * cfg.cluster.tasks_per_node, hours)


def assumed_throughput(cfg: RunConfig, *, mfu: float, peak_tflops: float = 0.0) -> Throughput | None:
    """``mfu`` of the device's peak (``peak_tflops`` if given, else the config's); None when no peak is known."""
    if not 0 < mfu <= 1:
        raise ValueError(f"plan.mfu={mfu}: use a fraction in (0, 1], e.g. --mfu 0.4 for 40 %")
    if peak_tflops < 0:
        raise ValueError(f"--peak-tflops={peak_tflops}: use the device's peak TFLOP/s (e.g. 989 for an H100 in bf16)")
    peak = peak_tflops * 1e12 if peak_tflops else peak_flops(cfg.train)
    if peak is None:
        return None
    return Throughput(mfu * peak, f"{100 * mfu:g} % MFU of {peak / 1e12:g} TFLOP/s")


def read_bench(path: Path) -> dict[str, Any]:
    """A ``bench/train_step.py --json`` result, checked for the fields the cost needs."""
    try:
        bench = json.loads(path.read_text())
        models, model_config = bench["models"], bench["model_config"]
        assert isinstance(models, dict) and models and isinstance(model_config, str)
        for figures in models.values():
            float(figures["train_gflop_per_sample"]), float(figures["samples_per_s_median"])
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as err:
        raise ValueError(f"plan.bench={str(path)!r}: not a bench/train_step.py --json result ({err!r}); "
                         "write one with `python bench/train_step.py --model-config <model> --json <file>`") from None
    return bench


def bench_model(bench: dict[str, Any]) -> ModelConfig:
    return load_config([f"model={bench['model_config']}"]).model


def measured_throughput(cfg: RunConfig, bench: dict[str, Any], model: ModelConfig) -> Throughput:
    """The FLOP/s the bench measured (median step) for the variant closest to ``cfg``: same M and fusion if the
    bench timed it, else the nearest in FLOPs per sample. ``model``: the bench's model config (must be cfg's)."""
    if model != cfg.model:
        raise ValueError(f"plan.bench: the bench timed model={bench['model_config']} ({model.name}), the grid trains "
                         f"{cfg.model.name}; run bench/train_step.py --model-config for that model")
    wanted = train_flops_per_sample(cfg.model, cfg.ito)

    def distance(item: tuple[str, dict[str, Any]]) -> tuple[bool, float]:
        name, figures = item
        same_kind = f"M={cfg.ito.images}" in name and (" no fusion" not in name) == fuses(cfg.ito)
        if name.startswith("CLIP baseline"):
            same_kind = cfg.ito.images == 1 and not fuses(cfg.ito)
        return not same_kind, abs(figures["train_gflop_per_sample"] * 1e9 - wanted)

    ours = {name: figures for name, figures in bench["models"].items() if "peer" not in name}
    name, figures = min(ours.items(), key=distance)
    rate = figures["train_gflop_per_sample"] * 1e9 * figures["samples_per_s_median"]
    where = bench.get("device_name") or bench.get("device", "?")
    return Throughput(rate, f"measured: {name} at {rate / 1e12:.3g} TFLOP/s on {where} ({bench.get('precision', '?')},"
                            f" batch {bench.get('batch_size', '?')})")
