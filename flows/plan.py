"""``ito-sweep plan``: what a sweep would do, before it spends anything. Submits nothing, writes nothing.

For every grid point: its run key and grid values, which stages the store already holds (they would be
skipped) and which would run, and what its training costs (``flows.cost``); what a submission would send, from
the executor's preview (SLURM: the sbatch script). The grid is expanded and validated as ``run`` does, so a grid
``run`` refuses is refused here with the same error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.executors import build_preview, executor_for
from cluster.jobs import TRAIN_JOBS, work_dir
from flows.cost import Cost, assumed_throughput, bench_model, measured_throughput, point_cost, read_bench
from flows.report import point_label
from ito_core.artifacts import RunLayout, committed, prep_keys, run_key
from ito_core.config import RunConfig, config_warnings
from ito_core.eval.stage import committed_eval
from ito_core.preflight import Finding
from ito_core.storage import build_store

STAGES = ("prep", "train", "strip", "eval")
PROBE_DEADLINE_S = 10.0  # how long an S3 store may retry before plan reports its stages as unknown
UNKNOWN = "unknown"  # a stage's status when the preflight found the store unusable


@dataclass(frozen=True)
class PointPlan:
    label: str  # the point's values on the grid axes
    run_key: str
    stages: dict[str, str]  # stage -> "done" (committed: skipped) | "run" | "?" (store unreadable)
    cost: Cost
    rate: str  # where the device throughput comes from ("" when unknown)


def stage_status(cfg: RunConfig, key: str) -> dict[str, str]:
    """Per stage, "done" when the store holds it committed (the run would skip it), else "run"; "?" for every
    stage when the store cannot be read (S3 retries are cut to ``PROBE_DEADLINE_S``)."""
    storage = dataclasses.replace(cfg.storage, retry_deadline_s=min(cfg.storage.retry_deadline_s, PROBE_DEADLINE_S))
    try:
        store, run = build_store(storage), RunLayout(key)
        done = {"prep": all(committed(store, k) for k in prep_keys(cfg.data, cfg.eval).values()),
                "train": committed(store, run.train), "strip": committed(store, run.model),
                "eval": committed_eval(store, key, cfg) is not None}
    except Exception:  # noqa: BLE001 - an unreachable store is a fact to print, not a reason to refuse planning
        return dict.fromkeys(STAGES, "?")
    return {stage: "done" if done[stage] else "run" for stage in STAGES}


def plan_points(points: list[list[str]], configs: list[RunConfig], keys: list[str], axes: list[str], *,
                mfu: float, peak_tflops: float = 0.0, bench: dict[str, Any] | None = None,
                probe_store: bool = True) -> list[PointPlan]:
    plans, model = [], bench_model(bench) if bench else None  # composed once
    for point, cfg, key in zip(points, configs, keys, strict=True):
        rate = (measured_throughput(cfg, bench, model) if bench and model
                else assumed_throughput(cfg, mfu=mfu, peak_tflops=peak_tflops))
        stages = stage_status(cfg, key) if probe_store else dict.fromkeys(STAGES, UNKNOWN)
        plans.append(PointPlan(point_label(point, axes), key, stages, point_cost(cfg, rate),
                               rate.source if rate else ""))
    return plans


def job_preview(cfg: RunConfig, key: str) -> str | None:
    """What the point's training job would be submitted with, as markdown (nothing is created or submitted); None
    for an executor without a preview."""
    return build_preview(cfg.cluster, work_dir(cfg, key) / TRAIN_JOBS)


def _hours(value: float | None) -> str:
    return "?" if value is None else f"{value:,.3g}"


def render_plan(plans: list[PointPlan], configs: list[RunConfig], *, sweep: str, where: str,
                findings: list[Finding] = ()) -> str:
    """The plan as markdown: the preflight's findings, one row per point, the totals, and what the first point
    whose executor has a preview would submit (SLURM: its sbatch script)."""
    cfg = configs[0]
    lines = [f"# Plan of sweep {sweep}: {len(plans)} grid point{'s' * (len(plans) != 1)} (nothing submitted)", ""]
    if findings:
        lines += ["Preflight (what `run` would check first; a failure stops it):", "",
                  *(f"- {f.line()}" for f in findings), ""]
    lines += [f"Store `{where}`; cluster `{cfg.cluster.kind}`. Stages: done = committed, skipped; run = would run; "
              f"? = store unreadable; {UNKNOWN} = store not read, it failed the preflight storage check above.", "",
             "| # | point | run key | " + " | ".join(STAGES) + " | train PFLOP | device-hours | wall hours |",
             "|---|---|---|" + "---|" * len(STAGES) + "---|---|---|"]
    for number, plan in enumerate(plans, 1):
        c = plan.cost
        lines.append(f"| {number} | {plan.label} | `{plan.run_key}` | " + " | ".join(plan.stages.values())
                     + f" | {c.total_flops / 1e15:,.4g} | {_hours(c.device_hours)} | {_hours(c.wall_hours)} |")
    to_train = [p for p in plans if p.stages["train"] != "done"]
    rates = list(dict.fromkeys(p.rate for p in plans if p.rate))
    total = sum(p.cost.device_hours or 0 for p in plans)
    pending = sum(p.cost.device_hours or 0 for p in to_train)
    flops = sum(p.cost.total_flops for p in plans)
    lines += ["", f"Training: {flops:.3g} FLOP over the grid ({plans[0].cost.train_flops_per_sample / 1e9:,.4g} "
              f"GFLOP per sample at point 1, every caption at the full context: an upper bound; x train.steps x "
              f"train.batch_size = {plans[0].cost.samples:,} samples)."]
    if rates:
        unknown = sum(not p.rate for p in plans)
        lines.append(f"**GPU-hours: {total:,.3g} for the grid, {pending:,.3g} for the {len(to_train)} "
                     f"point{'s' * (len(to_train) != 1)} still to train** (devices = GPUs, or CPU processes "
                     f"without GPUs; wall hours = device-hours / devices, perfect scaling), at {'; '.join(rates)}"
                     + (f"; {unknown} points without a known peak left out." if unknown else "."))
    else:
        lines.append("GPU-hours: unknown, no device peak: pass `--peak-tflops` (e.g. 989 for an H100 in bf16) with "
                     "`--mfu`, set `train.peak_tflops` or `ITO_PEAK_TFLOPS`, or `--bench` a bench/train_step.py JSON.")
    warnings = dict.fromkeys(w for c in configs for w in config_warnings(c))
    lines += [f"\nWarning: {w}" for w in warnings]
    previews = [(c, p.run_key) for c, p in zip(configs, plans, strict=True) if executor_for(c.cluster.kind).preview]
    if previews:
        note = " (other points: their own job folder, and any cluster.* setting the grid varies)" \
            if len(previews) > 1 else ""
        lines += ["", f"Point 1's training job{note}, {job_preview(*previews[0])}"]
    return "\n".join(lines) + "\n"


def plan_markdown(points: list[list[str]], configs: list[RunConfig], keys: list[str], *, sweep: str,
                  mfu: float | None = None, peak_tflops: float = 0.0, bench: str | None = None,
                  findings: list[Finding] | None = None) -> str:
    """The plan of validated grid points as markdown. ``mfu`` and ``bench`` default to ``plan.mfu``/``plan.bench``.
    With the preflight's ``findings``, they are listed, and a store that failed its check is not probed: its
    stages read "unknown" (the finding says why)."""
    from flows.grid import grid_axes

    bench = configs[0].plan.bench if bench is None else bench
    mfu = configs[0].plan.mfu if mfu is None else mfu
    unreadable = any(f.check == "storage" and f.failed for f in findings or [])
    plans = plan_points(points, configs, keys, grid_axes(points), peak_tflops=peak_tflops, mfu=mfu,
                        bench=read_bench(Path(bench)) if bench else None, probe_store=not unreadable)
    return render_plan(plans, configs, sweep=sweep, where=build_store(configs[0].storage).url(""),
                       findings=findings or [])


def checked_plan(overrides: list[str], *, config_name: str = "config", sweep_name: str = "",
                 mfu: float | None = None, peak_tflops: float = 0.0, bench: str | None = None,
                 skip_checks: Collection[str] | None = ()) -> tuple[str, list[Finding]]:
    """The whole plan of ``ito-sweep run <overrides>`` with the preflight's findings in it (none with
    ``skip_checks=None``), and the findings; ``ValueError`` for a grid ``run`` refuses."""
    from flows.grid import sweep_name_of, validated_grid
    from flows.preflight import preflight

    points, configs = validated_grid(overrides, config_name=config_name, sweep_name=sweep_name)
    findings = None if skip_checks is None else preflight(configs, "plan", skip_checks)
    return plan_markdown(points, configs, [run_key(cfg) for cfg in configs], sweep=sweep_name_of(points, sweep_name),
                         mfu=mfu, peak_tflops=peak_tflops, bench=bench, findings=findings), findings or []


def plan_sweep(overrides: list[str], **options: Any) -> str:
    """The plan of ``ito-sweep run <overrides>`` without the preflight (``checked_plan``'s options)."""
    return checked_plan(overrides, **options, skip_checks=None)[0]
