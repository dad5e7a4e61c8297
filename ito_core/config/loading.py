"""Loading configs: Hydra composition of ``configs/`` + overrides -> a validated ``RunConfig``.

``load_config`` makes one; ``load_grid`` makes a grid's worth (the same configs and errors, composing each
distinct set of config-group choices once). Unknown keys and wrong types fail while merging onto the schema,
impossible values in ``validate``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ito_core.config.errors import omegaconf_message, override_error, unknown_key_message
from ito_core.config.schema import RunConfig, RunSchema
from ito_core.config.validation import validate
from ito_core.methods import registry

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def unknown_keys(cfg: DictConfig | dict, schema: type = RunConfig, prefix: str = "") -> list[str]:
    """Keys of ``cfg`` the dataclass ``schema`` has no field for (dict-typed fields take any key; the ``method``
    section's keys are those of the chosen method, checked by ``registry.method_config``)."""
    hints, unknown = get_type_hints(schema), []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in hints:
            unknown.append(name)
        elif is_dataclass(hints[key]) and isinstance(value, dict | DictConfig) and name != "method":
            unknown += unknown_keys(value, hints[key], f"{name}.")
    return unknown


def check_known_keys(cfg: DictConfig | dict) -> None:
    """Refuse keys the schema lacks. Merging keeps them quietly when they came with a ``+`` override (Hydra types
    the group's node, and OmegaConf then lets the extra key through), so they are looked for by name."""
    if unknown := unknown_keys(cfg):
        raise ValueError("; ".join(unknown_key_message(key, RunConfig) for key in unknown)
                         + " (a '+' override adds keys only to dict-typed ones such as eval.datasets)")


def from_schema(composed: RunSchema) -> RunConfig:
    """The run config of a composed one: its ``method`` section becomes the chosen method's own dataclass."""
    sections = {f.name: getattr(composed, f.name) for f in fields(RunConfig)}
    return RunConfig(**(sections | {"method": registry.method_config(composed.method)}))


def to_run_config(cfg: DictConfig | dict) -> RunConfig:
    """Merge a plain or Omega config onto the schema (unknown keys/wrong types fail) and validate."""
    check_known_keys(cfg)
    schema = OmegaConf.structured(RunSchema)
    try:
        merged = OmegaConf.merge(schema, cfg)
        composed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ValueError(omegaconf_message(err)) from None
    assert isinstance(composed, RunSchema)
    return validate(from_schema(composed))


def open_method_keys(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``method.<option>=v`` as ``++method.<option>=v`` for an option of any registered method: the method section
    is an open dict holding only the chosen method's keys, and an option of another method stays settable without
    '+', as when one schema held them all (``registry.method_config`` keeps it aside for that method)."""
    options = {key for spec in registry.specs() for key in registry.option_names(spec)}
    return [f"++{o}" if o.startswith("method.") and o.split("=", 1)[0][len("method."):] in options else o
            for o in overrides]


def _compose(overrides: list[str] | tuple[str, ...], config_name: str, *, return_hydra_config: bool = False
             ) -> DictConfig:
    """Hydra's composition, its errors turned into a ``ValueError`` naming the override and the fix."""
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=open_method_keys(overrides),
                           return_hydra_config=return_hydra_config)
    except (ConfigCompositionException, OverrideParseException) as err:
        if message := override_error(err, RunConfig, list(overrides)):
            raise ValueError(message) from None
        # Hydra's "To append to your config use +key=..." is dropped: a key the schema lacks is refused either way.
        what = str(err).split("\nTo append")[0]
        cause = f" ({' '.join(str(err.__cause__).split())})" if err.__cause__ else ""
        raise ValueError(f"config overrides {list(overrides)}: {what}{cause}; see configs/ for valid groups "
                         "and keys") from None
    except OmegaConfBaseException as err:
        raise ValueError(omegaconf_message(err)) from None


def load_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> RunConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides into a validated ``RunConfig``."""
    cfg = _compose(overrides, config_name)
    OmegaConf.resolve(cfg)
    return to_run_config(cfg)


def hydra_sweeper_params(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> dict[str, str]:
    """``hydra.sweeper.params`` of the composed config (Hydra's own way to keep a grid in config)."""
    cfg = _compose(overrides, config_name, return_hydra_config=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper).get("params") or {}
    return {str(key): str(value) for key, value in params.items()}


def as_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data, its ``method`` section flat as users write it (what config.json holds and
    ``to_run_config`` reads back). A validated RunConfig holds plain values only, so the other sections equal
    OmegaConf's to_container(structured(cfg)) (a test checks), at 0.1 ms instead of 12: run keys hash it per point."""
    return asdict(cfg) | {"method": registry.method_dict(cfg.method)}


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (a config subset): names runs and cache keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``: the config key an override sets."""
    return override.split("=", 1)[0].lstrip("+~")


def load_grid(points: list[list[str]], *, config_name: str = "config") -> list[RunConfig]:
    """``[load_config(point) for point in points]``, the same configs and errors, faster.

    Hydra composes the defaults tree (config-group choices, ``+``/``~`` overrides) first and applies
    plain ``key=value`` overrides to the result afterwards, in order. So points that differ only in
    values share one composition, merged onto the ``RunConfig`` schema once (100 + 20 ms of YAML loading
    and merging), and get their values applied to a copy of it (4 ms a point, CPU time)."""
    try:
        return _load_grid([open_method_keys(point) for point in points], config_name)
    except (HydraException, OmegaConfBaseException):
        # a bad override: let load_config raise its error, which names the key and the fix
        return [load_config(point, config_name=config_name) for point in points]


def _load_grid(points: list[list[str]], config_name: str) -> list[RunConfig]:
    parser, composed, configs = OverridesParser.create(), {}, []
    parsed_once: dict[str, Override] = {}  # Hydra's parser takes ~0.2 ms an override; points share most of theirs
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        loader, is_group = GlobalHydra.instance().config_loader(), {}
        for point in points:
            for text in point:
                if text not in parsed_once:
                    parsed_once[text] = parser.parse_override(text)
            parsed = [parsed_once[text] for text in point]
            for override in parsed:
                if override.key_or_group not in is_group:
                    is_group[override.key_or_group] = bool(loader.get_group_options(override.key_or_group))
            plain = [_is_plain_value(o) and not is_group[o.key_or_group] for o in parsed]
            structure = tuple(text for text, p in zip(point, plain, strict=True) if not p)
            values = [o for o, p in zip(parsed, plain, strict=True) if p]
            if {o.key_or_group for o in values} & {override_key(text) for text in structure}:
                structure, values = tuple(point), []  # one key set both ways: Hydra orders them
            if structure not in composed:  # as to_run_config checks and merges it, once
                cfg = compose(config_name=config_name, overrides=list(structure))
                check_known_keys(cfg)
                composed[structure] = OmegaConf.merge(OmegaConf.structured(RunSchema), cfg)
            cfg = copy.deepcopy(composed[structure])
            for override in values:  # what Hydra does with a plain override after composing (typed here)
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
            configs.append(validate(from_schema(OmegaConf.to_object(cfg))))  # to_object resolves interpolations
    return configs


def _is_plain_value(override: Override) -> bool:
    """``key=value`` (no ``+``/``++``/``~``, no package, not a sweep, not ``hydra.*``)."""
    return not (override.is_add() or override.is_force_add() or override.is_delete() or override.is_sweep_override()
                or override.is_hydra_override() or override.package is not None)
