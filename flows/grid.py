"""Expand Hydra multirun syntax into grid points, as ``-m`` does.

Axes come from the config's ``sweep`` section (e.g. ``configs/experiment/demo.yaml``) and from
overrides; an override on the same key replaces the config's axis. ``a=1,2 b=x,y`` gives the 4
points of the Cartesian product; ranges (``seed=range(3)``) and ``choice(...)`` work too.
"""

from __future__ import annotations

import itertools

from hydra.core.override_parser.overrides_parser import OverridesParser

from ito_core.config import load_config


def _axes(overrides: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split overrides into sweep axes (key -> values) and fixed overrides."""
    axes, fixed = {}, []
    for text, parsed in zip(overrides, OverridesParser.create().parse_overrides(overrides), strict=True):
        if parsed.is_sweep_override():
            axes[parsed.get_key_element()] = list(parsed.sweep_string_iterator())
        else:
            fixed.append(text)
    return axes, fixed


def expand_grid(overrides: list[str], *, config_name: str = "config") -> list[list[str]]:
    """Every grid point as a full list of overrides (fixed ones first, then one value per axis)."""
    axes, fixed = _axes(overrides)
    config_axes = load_config(fixed, config_name=config_name).sweep
    cfg_axes, _ = _axes([f"{key}={values}" for key, values in config_axes.items()])
    merged = {**{k: v for k, v in cfg_axes.items() if k not in axes}, **axes}
    keys = list(merged)
    return [fixed + [f"{k}={v}" for k, v in zip(keys, values, strict=True)]
            for values in itertools.product(*(merged[k] for k in keys))]


def grid_axes(points: list[list[str]]) -> list[str]:
    """The override keys that vary across points (the report's columns)."""
    seen: dict[str, set[str]] = {}
    for point in points:
        for override in point:
            key, _, value = override.partition("=")
            seen.setdefault(key, set()).add(value)
    return [key for key, values in seen.items() if len(values) > 1]
