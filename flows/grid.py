"""Expand Hydra multirun syntax into grid points, as ``-m`` does.

Axes come from the config's ``sweep`` section (e.g. ``configs/experiment/demo.yaml``), from Hydra's
``hydra.sweeper.params`` section, and from overrides; an override on the same key, sweep or fixed,
replaces the config's axis. ``a=1,2 b=x,y``
gives the 4 points of the Cartesian product; ranges (``seed=range(3)``) and ``choice(...)`` work too.
``ito_core.config.load_grid`` turns the points into validated configs.
"""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

from ito_core.config import hydra_sweeper_params, load_config, override_key


def with_presets(overrides: list[str], presets: dict[str, str]) -> list[str]:
    """``presets`` (key -> value; an empty value is no preset) first, minus the keys ``overrides`` set."""
    taken = {override_key(o) for o in overrides}
    return [f"{key}={value}" for key, value in presets.items() if value and key not in taken] + list(overrides)


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
    axes, fixed = _axes(overrides)
    config_axes = {**hydra_sweeper_params(fixed, config_name), **load_config(fixed, config_name=config_name).sweep}
    cfg_axes, _ = _axes([f"{key}={values}" for key, values in config_axes.items()])
    pinned = {override_key(o) for o in [*axes, *fixed]}
    merged = {**{k: v for k, v in cfg_axes.items() if override_key(k) not in pinned}, **axes}
    keys = list(merged)
    return [fixed + [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
            for values in itertools.product(*(merged[k] for k in keys))]


def grid_axes(points: list[list[str]]) -> list[str]:
    """The override keys that vary across points (the report's columns)."""
    values = [dict(override.partition("=")[::2] for override in point) for point in points]  # last one wins
    keys = dict.fromkeys(key for point in values for key in point)
    return [key for key in keys if len({point.get(key) for point in values}) > 1]
