"""``ito-sweep prep|train|strip|eval OVERRIDE...``: one stage for each point of the grid ``ito-sweep run`` would run.

Lists expand as they do for ``run`` (``ito.images=1,2``, ``seed=range(3)``, an experiment's ``sweep`` section;
``-m`` is accepted, not needed), and the points run one after another in this process: ``ito-sweep strip <the
run's overrides>`` strips the same points the sweep trained. A stage whose input was never committed (strip before
train, eval before strip) is refused for every point before any work starts, naming the command to run first.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from typing import Any

from flows.grid import grid_axes, validated_grid
from flows.report import point_label
from flows.stages import eval_task, prep_task, strip_task, train_task
from ito_core.artifacts import RunLayout, committed, run_key
from ito_core.config import RunConfig
from ito_core.eval.stage import committed_eval
from ito_core.storage import ArtifactStore, build_store

# What each stage reads from the stages before it: stage -> (earlier stage, the store key it commits).
NEEDS = {"strip": [("train", lambda run: run.train)],
         "eval": [("train", lambda run: run.train), ("strip", lambda run: run.model)]}
DONE = {"train": "trained", "strip": "stripped"}


class StageNotReady(ValueError):
    """A stage command's input was never committed; the message names the command to run first."""


def command_line(stage: str, overrides: list[str], config_name: str) -> str:
    """``ito-sweep <stage> ...`` with the overrides as given (quoted for a shell)."""
    option = [] if config_name == "config" else ["--config-name", config_name]
    return shlex.join(["ito-sweep", stage, *option, *overrides])


def already_done(stage: str, store: ArtifactStore, cfg: RunConfig, key: str) -> bool:
    """Whether the stage's own output is committed, so that it skips itself and reads no input."""
    if stage == "strip":
        return committed(store, RunLayout(key).model)
    return stage == "eval" and committed_eval(store, key, cfg) is not None


def check_inputs(stage: str, configs: list[RunConfig], keys: list[str], *, overrides: list[str],
                 config_name: str) -> None:
    """``StageNotReady`` when any point lacks a committed earlier stage: which points, and what to run first."""
    missing: dict[str, list[str]] = {}
    for cfg, key in zip(configs, keys, strict=True):
        store = build_store(cfg.storage)
        if stage not in NEEDS or already_done(stage, store, cfg, key):
            continue
        first = next((earlier for earlier, artifact in NEEDS[stage] if not committed(store, artifact(
            RunLayout(key)))), None)
        if first is not None:
            missing.setdefault(first, []).append(key)
    if not missing:
        return
    where = build_store(configs[0].storage).url("")
    parts = [f"{', '.join(runs)} {'was' if len(runs) == 1 else 'were'} never {DONE[earlier]}"
             for earlier, runs in missing.items()]
    order = [earlier for earlier, _ in NEEDS[stage]]
    todo = " && ".join(command_line(earlier, overrides, config_name)
                       for earlier in order[min(map(order.index, missing)):])
    of = f" ({sum(map(len, missing.values()))} of {len(keys)} grid points)" if len(keys) > 1 else ""
    raise StageNotReady(f"{stage}: {'; '.join(parts)} in {where}{of}; run `{todo}` first")


def run_stage_command(stage: str, overrides: list[str], *, config_name: str,
                      preflight: Callable[[list[RunConfig]], Any] = lambda configs: None) -> Iterator[str]:
    """Run ``stage`` for each grid point in turn, yielding one line per point as it finishes; ``preflight`` (of every
    point's config) raises before any work when a check fails."""
    points, configs = validated_grid(overrides, config_name=config_name)
    preflight(configs)
    keys = [run_key(cfg) for cfg in configs]
    check_inputs(stage, configs, keys, overrides=overrides, config_name=config_name)
    axes = grid_axes(points)
    for point, cfg, key in zip(points, configs, keys, strict=True):
        label = f" ({point_label(point, axes)})" if axes else ""
        yield f"{stage} done for {key}{label}: {run_one(stage, cfg, key)}"


def run_one(stage: str, cfg: RunConfig, key: str) -> Any:
    """One stage of one point, outside any flow run (the tasks' own functions): the data keys after prep, the
    checkpoint after train, the manifests after strip and eval."""
    data_keys = prep_task.fn(cfg) if stage in ("prep", "train", "eval") else {}
    if stage == "train":
        return train_task.fn(cfg, data_keys, key)["checkpoint"]
    if stage == "strip":
        return strip_task.fn(cfg, key)
    return eval_task.fn(cfg, data_keys, key) if stage == "eval" else data_keys
