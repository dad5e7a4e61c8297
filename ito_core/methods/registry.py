"""The methods ito-sweep trains, by name: every package under ``ito_core/methods/`` that defines ``SPEC``, plus the
modules named in ``$ITO_SWEEP_METHODS`` (comma-separated, for methods that live outside this package; the env var
reaches job processes too) and any spec passed to :func:`register`. Torch-free.

Config loading turns the ``method`` section users write (flat keys: ``method.name``, ``method.flair_heads``...) into
the chosen method's own dataclass (:func:`method_config`) and back (:func:`method_dict`); run keys ask
:func:`method_identity`.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ito_core.config.schema import MethodConfig
from ito_core.methods.spec import RUN_KEY_LEGACY, RUN_KEY_NONE, RUN_KEY_OWN, Architecture, MethodSpec

PLUGINS_ENV = "ITO_SWEEP_METHODS"
_SPECS: dict[str, MethodSpec] = {}
_discovered = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add a method; its option keys must be new (a ``method.<option>`` key names one method's option)."""
    if spec.name in _SPECS and _SPECS[spec.name] is not spec:
        raise ValueError(f"method {spec.name!r} is registered twice; rename one of them")
    taken = {key: other.name for other in _SPECS.values() if other.name != spec.name for key in option_names(other)}
    if clash := [key for key in option_names(spec) if key in taken]:
        raise ValueError(f"method {spec.name!r}: option(s) {clash} belong to another method already; prefix them "
                         f"with the method's name ({spec.name}_...)")
    _SPECS[spec.name] = spec
    return spec


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    package = Path(__file__).parent
    modules = [f"{__package__}.{info.name}" for info in pkgutil.iter_modules([str(package)]) if info.ispkg]
    modules += [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]
    for module in modules:
        spec = getattr(importlib.import_module(module), "SPEC", None)
        if not isinstance(spec, MethodSpec):
            raise ValueError(f"{module} (a method package, or named in ${PLUGINS_ENV}) defines no "
                             "SPEC = MethodSpec(...)")
        register(spec)


def specs() -> list[MethodSpec]:
    _discover()
    return list(_SPECS.values())


def names() -> tuple[str, ...]:
    """Every registered ``method.name``."""
    return tuple(spec.name for spec in specs())


def get(name: str) -> MethodSpec:
    """The spec of ``method.name``; ``ValueError`` naming the choices otherwise."""
    _discover()
    if name not in _SPECS:
        raise ValueError(f"config method.name: {name!r} is not supported; choose one of {list(_SPECS)} "
                         f"(a new method: a package under ito_core/methods/ with a SPEC, or ${PLUGINS_ENV})")
    return _SPECS[name]


def option_names(spec: MethodSpec) -> list[str]:
    """The ``method.<option>`` keys of ``spec`` (its config's fields beyond ``MethodConfig``'s)."""
    base = {f.name for f in fields(MethodConfig)}
    return [f.name for f in fields(spec.config or MethodConfig) if f.name not in base]


def option_owner(key: str) -> MethodSpec | None:
    return next((spec for spec in specs() if key in option_names(spec)), None)


def _typed(spec: MethodSpec, values: dict[str, Any]) -> MethodConfig:
    """``values`` merged onto the spec's config dataclass: OmegaConf's type checks and conversions (1 -> 1.0)."""
    try:
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(spec.config or MethodConfig), values))
    except OmegaConfBaseException as err:
        text = str(getattr(err, "msg", "") or err).split("\n")[0].split("    full_key:")[0].strip()
        raise ValueError(f"config method.{getattr(err, 'full_key', '') or '?'}: {text}; check the value's type in "
                         f"the options of method={spec.name}") from None
    assert isinstance(typed, MethodConfig)
    return typed


def method_config(raw: Mapping[str, Any]) -> MethodConfig:
    """The ``method`` section as users write it -> the chosen method's own dataclass.

    Keys of another method's options are kept in ``others`` (checked by their owner's types), not refused: a sweep
    over methods sets each method's options once (``experiment=method_comparison`` sets SLIP's head widths), and
    each grid point reads its own."""
    raw = dict(raw)
    spec = get(str(raw.get("name", MethodConfig.name)))
    own_keys = {"name", *option_names(spec)}
    others = {}
    for key, value in raw.items():
        if key in own_keys:
            continue
        owner = option_owner(key)
        if owner is None:
            every = [k for other in specs() for k in option_names(other)]
            close = difflib.get_close_matches(key, every, n=1, cutoff=0.6)
            hint = (f"did you mean method.{close[0]}?" if close
                    else f"the options of method={spec.name}: {option_names(spec)}")
            raise ValueError(f"config method.{key}: no method has this option; {hint}")
        others[key] = getattr(_typed(owner, {key: value}), key)
    typed = _typed(spec, {key: value for key, value in raw.items() if key in own_keys})
    typed.others = others
    return typed


def method_dict(method: MethodConfig) -> dict[str, Any]:
    """The flat ``method`` section users write (name, own options, other methods' options): what config.json,
    the model card and run keys hold."""
    spec = get(method.name)
    return {"name": method.name, **{key: getattr(method, key) for key in option_names(spec)}, **method.others}


def method_identity(method: MethodConfig) -> dict[str, Any] | None:
    """What ``method`` adds to a run key, or None.

    ``RUN_KEY_LEGACY`` reproduces the run keys from before each method had its own options: a flat section that
    held every option of those methods, set or not, so a flair run's key also hashes SLIP's head widths."""
    spec = get(method.name)
    if spec.run_key == RUN_KEY_NONE:
        return None
    flat = method_dict(method)
    if spec.run_key == RUN_KEY_OWN:
        return {key: flat[key] for key in ("name", *option_names(spec))}
    assert spec.run_key == RUN_KEY_LEGACY
    legacy = [s for s in specs() if s.run_key == RUN_KEY_LEGACY]
    identity: dict[str, Any] = {"name": method.name}
    for other in legacy:
        defaults = other.config() if other.config else MethodConfig()
        identity |= {key: flat.get(key, getattr(defaults, key)) for key in option_names(other)}
    return identity


def architecture(name: str) -> Architecture:
    """The deployable encoder ``model_config.json`` names; ``ValueError`` for one no registered method builds."""
    known = {spec.architecture.name: spec.architecture for spec in specs()}
    if name not in known:
        raise ValueError(f"architecture={name!r}: this version of ito_core loads {sorted(known)}")
    return known[name]
