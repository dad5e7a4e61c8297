"""Expand Hydra multirun syntax into grid points, as ``-m`` does.

Axes come from the config's ``sweep`` section (e.g. ``configs/experiment/demo.yaml``), from Hydra's
``hydra.sweeper.params`` section, and from overrides; an override on the same key, sweep or fixed,
replaces the config's axis. ``a=1,2 b=x,y``
gives the 4 points of the Cartesian product; ranges (``seed=range(3)``) and ``choice(...)`` work too.
``ito_core.config.load_grid`` turns the points into validated configs.
"""

from __future__ import annotations

import itertools
import re

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from cluster.executors import check_cluster
from flows.replicates import resolve_baseline
from ito_core.config import RunConfig, config_hash, hydra_sweeper_params, load_config, load_grid, override_key


def with_presets(overrides: list[str], presets: dict[str, str]) -> list[str]:
    """``presets`` (key -> value; an empty value is no preset) first, minus the keys ``overrides`` set."""
    taken = {override_key(o) for o in overrides}
    return [f"{key}={value}" for key, value in presets.items() if value and key not in taken] + list(overrides)


def normalized(overrides: list[str]) -> list[str]:
    """Overrides as users type them, in Hydra's syntax: a value Hydra cannot parse for its braces, such as a shard
    pattern ``data.input=/data/cc12m/{00000..01242}.tar``, is quoted; an ``s3://`` ``storage.root`` without a
    ``storage=`` choice selects ``storage=s3`` (as the flow's ``storage_root`` parameter does)."""
    parser, out = OverridesParser.create(), []
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and "{" in value and not value.startswith(("'", '"')) and "'" not in value:
            try:
                parser.parse_override(text)
            except HydraException:
                text = f"{key}='{value}'"
        out.append(text)
    keys = {override_key(o): o.partition("=")[2].strip("'\"") for o in out}
    if keys.get("storage.root", "").startswith("s3://") and "storage" not in keys:
        out.insert(0, "storage=s3")
    return out


def _axes(overrides: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split overrides into sweep axes (key -> values) and fixed overrides."""
    axes, fixed = {}, []
    try:
        parsed_all = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ValueError(f"overrides {overrides}: {err}; use Hydra override syntax (key=value, key=a,b)") from None
    for text, parsed in zip(overrides, parsed_all, strict=True):
        if not parsed.is_sweep_override():
            fixed.append(text)
            continue
        try:
            axes[parsed.get_key_element()] = list(parsed.sweep_string_iterator())
        except HydraException:
            raise ValueError(f"override {text!r}: only lists (a,b), range() and choice() expand to a grid; "
                             "interval() and glob() need a sweeper") from None
    return axes, fixed


def expand_grid(overrides: list[str], *, config_name: str = "config") -> list[list[str]]:
    """Every grid point as a full list of overrides (fixed ones first, then one value per axis)."""
    axes, fixed = _axes(normalized(overrides))
    config_axes = {**hydra_sweeper_params(fixed, config_name), **load_config(fixed, config_name=config_name).sweep}
    cfg_axes, _ = _axes([f"{key}={values}" for key, values in config_axes.items()])
    pinned = {override_key(o) for o in [*axes, *fixed]}
    merged = {**{k: v for k, v in cfg_axes.items() if override_key(k) not in pinned}, **axes}
    keys = list(merged)
    return [fixed + [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
            for values in itertools.product(*(merged[k] for k in keys))]


def axis_values(points: list[list[str]]) -> dict[str, list[str]]:
    """The override keys that vary across points (the report's columns) -> their values in grid order."""
    values = [dict(override.partition("=")[::2] for override in point) for point in points]  # last one wins
    keys = dict.fromkeys(key for point in values for key in point)
    seen = {key: list(dict.fromkeys(point.get(key) for point in values)) for key in keys}
    return {key: [v for v in seen[key] if v is not None] for key in keys if len(seen[key]) > 1}


def grid_axes(points: list[list[str]]) -> list[str]:
    return list(axis_values(points))


def validated_grid(overrides: list[str], *, config_name: str, sweep_name: str = "", max_concurrent_train: int = 1
                   ) -> tuple[list[list[str]], list[RunConfig]]:
    """The grid's points and their validated configs; ``ValueError`` naming the key and the fix for any bad input.
    Everything is checked before any job: the report key sweeps/<name>/ is only written after the whole sweep."""
    if max_concurrent_train < 1:
        raise ValueError(f"max_concurrent_train={max_concurrent_train}; use at least 1")
    if sweep_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", sweep_name):
        raise ValueError(f"sweep_name={sweep_name!r}: use letters, digits, '.', '_' and '-' (no '/' or '..'), "
                         "starting with a letter or digit")
    points = expand_grid(overrides, config_name=config_name)
    configs = load_grid(points, config_name=config_name)
    for cluster in {repr(c.cluster): c.cluster for c in configs}.values():
        check_cluster(cluster)  # cluster.kind and the executor's own rules (ito_core knows no executor)
    resolve_baseline(configs[0].report.baseline, axis_values(points), configs[0].report.replicate_axis)
    return points, configs


def sweep_name_of(points: list[list[str]], sweep_name: str = "") -> str:
    """The sweep's name: the one given, else a hash of its points (the same grid gets the same report folder)."""
    return sweep_name or f"sweep-{config_hash(points)}"
