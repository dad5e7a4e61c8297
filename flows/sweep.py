"""The ``ito-sweep`` Prefect flow: expand the grid, then prep -> train -> strip -> eval per point,
then one report. Reads like docs/DESIGN.md's pipeline; the work lives in ``flows.stages``.

Concurrency: prep runs once per distinct data config; train, strip and eval each go to their own task
runner of ``max_concurrent_train`` threads, so a 100-point grid has at most that many trainings on the
cluster (queued points start as slots free up) and the flow process holds a bounded number of threads
however many points it has. A failed stage stops only its own point (its later stages end ``NotReady``); the flow
reports every point, then ends Failed if any failed. Re-running or retrying skips committed stages.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FailedRun
from prefect.futures import PrefectFuture, wait
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.grid import axis_values, sweep_name_of, validated_grid, with_presets
from flows.plan import plan_markdown
from flows.plots import plot_metrics
from flows.preflight import preflight
from flows.replicates import resolve_baseline
from flows.report import metric_names, point_label, render_report, report_rows, sweep_statistics, to_csv
from flows.stages import eval_task, prep_task, stage_logger, strip_task, train_task
from ito_core.artifacts import ANY_RUN, RunLayout, SweepLayout, data_id, member_key, run_key, sweep_key
from ito_core.config import RunConfig
from ito_core.eval.suite import summary_metrics, summary_plots
from ito_core.preflight import Finding
from ito_core.storage import build_store

# Deployments made by `ito-sweep serve` (and prefect.yaml): name -> the parameters it presets.
DEPLOYMENTS: dict[str, dict[str, Any]] = {"local": {"cluster": "local"}, "slurm": {"cluster": "slurm"}}


class ReturnedFailure(logging.Filter):
    """Prefect's engine logs "Engine execution exited with unexpected exception" and a traceback for every failed
    flow run, also for one that returned its Failed state on purpose (a config error, logged in one line and
    the state's message). Those records (``FailedRun``) are dropped; any other exception is still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], FailedRun))


def quiet_returned_failures() -> None:
    engine = logging.getLogger("prefect.flow_runs")
    if not any(isinstance(f, ReturnedFailure) for f in engine.filters):
        engine.addFilter(ReturnedFailure())


class SweepFailed(RuntimeError):
    """Some grid points failed; the others completed and the report lists both."""


def submit_preps(configs: list[RunConfig], data_ids: list[str]) -> dict[str, PrefectFuture]:
    """One prep task per distinct data config (points share its shards)."""
    firsts = dict(reversed(list(zip(data_ids, configs, strict=True))))
    return {key: prep_task.submit(cfg) for key, cfg in firsts.items()}


@dataclass(frozen=True)
class StageRunners:
    """One task runner per stage after prep, each ``width`` threads. A strip or eval task takes its thread when
    submitted and waits there for its point's previous stage, so on the flow's unbounded pool every point of the
    grid held two threads from the start (docs/BENCHMARKS.md, the live sweep at team scale). Each runner takes
    its tasks in submission order (points in grid order), so the first ``width`` of a stage always wait on work
    already running: no deadlock."""

    train: ThreadPoolTaskRunner
    strip: ThreadPoolTaskRunner
    eval: ThreadPoolTaskRunner

    @classmethod
    @contextmanager
    def opened(cls, width: int) -> Iterator[StageRunners]:
        with ThreadPoolTaskRunner(max_workers=width) as train, ThreadPoolTaskRunner(max_workers=width) as strip, \
                ThreadPoolTaskRunner(max_workers=width) as eval_:
            yield cls(train, strip, eval_)


def submit_point(cfg: RunConfig, key: str, data: PrefectFuture, runners: StageRunners, *,
                 label: str = "") -> dict[str, PrefectFuture]:
    """train (waits for a training slot) -> strip -> eval of one grid point (run ``key``; ``label``: its grid
    values, in the task runs' names), as futures."""
    train = runners.train.submit(train_task, {"cfg": cfg, "data_keys": data, "key": key, "label": label})
    strip = runners.strip.submit(strip_task, {"cfg": cfg, "key": key, "label": label}, wait_for=[train])
    evaluation = runners.eval.submit(eval_task, {"cfg": cfg, "data_keys": data, "key": key, "label": label},
                                     wait_for=[strip])
    return {"prep": data, "train": train, "strip": strip, "eval": evaluation}


def point_result(key: str, overrides: list[str], stages: dict[str, PrefectFuture]) -> dict[str, Any]:
    """The point's row: metrics when every stage completed, else the first stage that failed and why."""
    result: dict[str, Any] = {"overrides": overrides, "run_key": key}
    outputs = {}
    for stage, future in stages.items():
        try:
            outputs[stage] = future.result()
        except Exception as err:  # the point failed here; its later stages never ran
            return {**result, "status": "failed", "stage": stage, "error": f"{type(err).__name__}: {err}"}
    history = outputs["train"].get("history") or [{}]
    eval_key = RunLayout(key).eval
    plots = {name: member_key(eval_key, path) for name, path in summary_plots(outputs["eval"]).items()}
    held_in = sorted({r["dataset"] for r in outputs["eval"] if r.get("in_distribution")})  # marked in the report
    return {**result, "status": "ok", "metrics": summary_metrics(outputs["eval"]), "plots": plots,
            "in_distribution": held_in,
            "final_loss": history[-1].get("loss", ""), "final_align_loss": history[-1].get("align_loss", "")}


def resume_hint(store_url: str) -> str:
    deployment = f"{runtime.flow_run.flow_name}/{runtime.deployment.name}"
    again = (f"`prefect flow-run retry {runtime.flow_run.id}`, or run deployment `{deployment}` again with the same "
             "parameters" if runtime.deployment.id else "run the same `ito-sweep run ...` again")
    return (f"{again}. Committed stages are skipped and training resumes from the newest checkpoint in "
            f"`{store_url}/{ANY_RUN.checkpoints}/`; fix the cause first if the error is not "
            "transient.")


@task(name="report", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def report_task(results: list[dict[str, Any]], axes: dict[str, list[str]], cfg: RunConfig, sweep: str) -> str:
    """report.md, report.csv (a row per point), arms.csv and comparisons.csv (the replicate statistics),
    results.json (all of it) and plot-<axis>.png under ``sweeps/<sweep>/`` + a Prefect artifact. ``axes``: each
    grid axis -> its values."""
    store, folder, report = build_store(cfg.storage), SweepLayout(sweep_key(sweep)), cfg.report
    baseline = resolve_baseline(report.baseline, axes, report.replicate_axis)
    rows = report_rows(results, list(axes), report.metrics)
    stats = sweep_statistics(rows, list(axes), metric_names(results, report.metrics),
                             replicate_axis=report.replicate_axis, baseline=baseline)
    with tempfile.TemporaryDirectory() as tmp:
        plots = plot_metrics(report_rows(results, list(axes)), list(axes), Path(tmp), report.plot_metrics,
                             replicate_axis=report.replicate_axis)
        store.upload_dir(Path(tmp), folder.key)
    markdown = render_report(results, list(axes), sweep=sweep, where=store.url(folder.key), plots=plots,
                             resume=resume_hint(store.url("")), metrics=report.metrics,
                             replicate_axis=report.replicate_axis, baseline=baseline, stats=stats,
                             logs=store.url(ANY_RUN.logs) + "/")
    store.write_json(folder.results, {"points": results, "statistics": stats})
    store.write_text(folder.report_csv, to_csv(rows))
    if report.replicate_axis in axes:
        store.write_text(folder.arms_csv, to_csv(stats["arms"]))
        store.write_text(folder.comparisons_csv, to_csv(stats["comparisons"]))
    store.write_text(folder.report_md, markdown)
    create_markdown_artifact(markdown=markdown, key=artifact_key(sweep),
                             description=f"ito-sweep report ({len(results)} grid points)")
    return markdown


def artifact_key(sweep: str, kind: str = "sweep") -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes."""
    return (f"{kind}-" + re.sub(r"[^a-z0-9-]+", "-", sweep.lower())).strip("-")[:60]


def plan_artifact(points: list[list[str]], configs: list[RunConfig], keys: list[str], sweep: str,
                  findings: list[Finding]) -> str:
    """A deployment's dry run: the plan (with the preflight's findings) as the flow's result and as an artifact."""
    markdown = plan_markdown(points, configs, keys, sweep=sweep, findings=findings)
    get_run_logger().info("dry run, nothing submitted:\n%s", markdown)
    create_markdown_artifact(markdown=markdown, key=artifact_key(sweep, "plan"), description="ito-sweep plan")
    return markdown


@flow(name="ito-sweep", log_prints=True, task_runner=ThreadPoolTaskRunner())
def ito_sweep(overrides: list[str] | None = None, config_name: str = "config", sweep_name: str = "",
              experiment: str = "", cluster: str = "", storage_root: str = "", max_concurrent_train: int = 4,
              dry_run: bool = False, skip_checks: list[str] | None = None) -> str | State:
    """Run every grid point of ``overrides`` (Hydra multirun syntax: ``ito.images=1,2,4``, ``seed=range(3)``)
    on ``configs/<config_name>.yaml`` (+ ``experiment=``, ``cluster=`` and ``storage.root=`` presets when set;
    an ``s3://`` root selects ``storage=s3``) with at most ``max_concurrent_train`` training jobs at once.
    Writes the report to ``<storage root>/sweeps/<sweep_name>/`` and returns it (markdown); a config error ends the
    run Failed with the error as the state's message. With ``dry_run``
    submits nothing: returns (and files as artifact ``plan-<sweep_name>``) what ``ito-sweep plan`` prints.
    The preflight (``flows.preflight``) runs first, less the checks named in ``skip_checks`` (``["all"]``: none); a
    failed check ends the run Failed, with one line per failure as the state's message, before anything is
    submitted."""
    presets = {"experiment": experiment, "cluster": cluster, "storage.root": storage_root,
               "storage": "s3" if storage_root.startswith("s3://") else ""}
    try:
        points, configs = validated_grid(with_presets(list(overrides or []), presets), config_name=config_name,
                                         sweep_name=sweep_name, max_concurrent_train=max_concurrent_train)
        findings = preflight(configs, "flow", skip_checks or ())
    except ValueError as err:  # a config error ends the run with its one line, not the engine's traceback
        stage_logger().error("%s", err)
        quiet_returned_failures()
        return Failed(message=str(err))
    log = stage_logger()
    if set(skip_checks or ()) == {"all"}:  # `ito-sweep run` checked before starting the flow: nothing to repeat
        log.info("preflight: every check skipped (skip_checks=['all']; `ito-sweep run` runs them first)")
    else:
        for finding in findings:
            (log.error if finding.failed else log.info)("%s", finding.line())
    keys, data_ids = [run_key(cfg) for cfg in configs], [data_id(cfg) for cfg in configs]  # ~10 ms each: once
    sweep = sweep_name_of(points, sweep_name)
    plan = plan_artifact(points, configs, keys, sweep, findings) if dry_run else ""
    if failures := [f.line() for f in findings if f.failed]:  # nothing submitted; one line per failed check
        quiet_returned_failures()
        return Failed(message="\n".join(failures))
    if dry_run:
        return plan
    logger = get_run_logger()
    for cfg in configs:
        cfg.wandb.group = cfg.wandb.group or sweep  # one W&B group per sweep
    axes = axis_values(points)
    logger.info("sweep %s: %d grid points, at most %d training at once", sweep, len(points), max_concurrent_train)
    preps = submit_preps(configs, data_ids)
    with StageRunners.opened(max_concurrent_train) as runners:
        stages = [submit_point(cfg, key, preps[data], runners, label=point_label(point, list(axes)) if axes else "")
                  for cfg, key, data, point in zip(configs, keys, data_ids, points, strict=True)]
        wait([future for point in stages for future in point.values()])
    results = [point_result(*args) for args in zip(keys, points, stages, strict=True)]
    markdown = report_task(results, axes, configs[0], sweep)
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        raise SweepFailed(f"{len(failed)}/{len(results)} grid points failed; the report lists them and how to "
                          f"resume:\n{markdown}")
    return markdown
