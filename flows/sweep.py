"""The ``ito-sweep`` Prefect flow: expand the grid, then prep -> train -> strip -> eval per point,
then one report. Reads like DESIGN.md's pipeline; the work lives in ``flows.stages``.
"""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.grid import expand_grid, grid_axes
from flows.report import report_rows, to_csv, to_markdown
from flows.stages import eval_task, prep_task, run_key, strip_task, train_task
from ito_core.config import RunConfig, config_hash, load_config
from ito_core.eval.suite import summary_metrics
from ito_core.storage import build_store


def run_point(cfg: RunConfig, overrides: list[str], logger: logging.Logger) -> dict[str, Any]:
    """prep -> train -> strip -> eval for one grid point; a failure is recorded, not raised."""
    key = run_key(cfg)
    result: dict[str, Any] = {"overrides": overrides, "run_key": key}
    try:
        data_keys = prep_task(cfg)
        trained = train_task(cfg, data_keys, key)
        strip_task(cfg, key)
        records = eval_task(cfg, data_keys, key)
        history = trained.get("history") or [{}]
        result.update(status="ok", metrics=summary_metrics(records), final_loss=history[-1].get("loss", ""))
    except Exception as err:  # isolate grid points: one failure must not cancel the others
        logger.error("grid point %s failed: %s", overrides, err)
        result.update(status=f"failed: {type(err).__name__}: {err}"[:200])
    return result


@task(name="report", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def report_task(results: list[dict[str, Any]], axes: list[str], cfg: RunConfig, sweep: str) -> str:
    rows = report_rows(results, axes)
    markdown, store = to_markdown(rows), build_store(cfg.storage)
    store.write_json(f"sweeps/{sweep}/results.json", results)
    for name, text in (("report.md", markdown), ("report.csv", to_csv(rows))):
        store.write_text(f"sweeps/{sweep}/{name}", text)
    create_markdown_artifact(markdown=f"# Sweep {sweep}\n\n{markdown}", key=f"sweep-{sweep}".lower()[:60],
                             description=f"ito-sweep report ({len(rows)} grid points)")
    return markdown


@flow(name="ito-sweep", log_prints=True)
def ito_sweep(overrides: list[str] | None = None, config_name: str = "config", sweep_name: str = "") -> str:
    """Run every grid point of ``overrides`` (Hydra multirun syntax) and return the report table."""
    logger = get_run_logger()
    points = expand_grid(list(overrides or []), config_name=config_name)
    configs = [load_config(point, config_name=config_name) for point in points]  # all validated up front
    sweep = sweep_name or f"sweep-{config_hash(points)}"
    for cfg in configs:
        cfg.wandb.group = cfg.wandb.group or sweep  # one W&B group per sweep
    logger.info("sweep %s: %d grid points", sweep, len(points))
    results = [run_point(cfg, point, logger) for cfg, point in zip(configs, points, strict=True)]
    markdown = report_task(results, grid_axes(points), configs[0], sweep)
    failed = [r for r in results if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)}/{len(results)} grid points failed; re-run the same command to resume "
                           f"them (completed stages are skipped):\n{markdown}")
    return markdown
