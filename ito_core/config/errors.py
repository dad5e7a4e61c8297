"""Hydra and OmegaConf errors as one line a user can act on: the key, what is wrong, the fix.

Hydra reports an unknown key with OmegaConf's internals (``full_key``, ``reference_type``...) and an unknown
group option with its config search path; here they name the key and the closest valid one, or list the
group's options.
"""

from __future__ import annotations

import difflib
from dataclasses import fields, is_dataclass
from typing import Any, get_type_hints

from hydra.errors import MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key of the dataclass ``schema`` (``ito.images``, ``train.lr``, ...), sections included."""
    keys, hints = [], get_type_hints(schema)
    for f in fields(schema):
        keys.append(f"{prefix}{f.name}")
        if is_dataclass(hints[f.name]):
            keys += schema_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def did_you_mean(key: str, schema: type) -> str:
    """``; did you mean ito.images?`` for a mistyped key, else the valid keys of its section."""
    known, section = schema_keys(schema), key.rpartition(".")[0]
    same_depth = [k for k in known if k.count(".") == key.count(".")]  # a typo keeps the key's depth
    if close := difflib.get_close_matches(key, same_depth, n=1, cutoff=0.6):
        return f"did you mean {close[0]}?"
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == section]
    return f"valid keys{f' of {section}' if section else ''}: {', '.join(siblings)}"


def unknown_key_message(key: str, schema: type) -> str:
    return f"config {key}: no such key; {did_you_mean(key, schema)} (schemas: ito_core/config/schema.py)"


def override_error(err: Exception, schema: type, overrides: list[str]) -> str | None:
    """The one-line message for a composition error Hydra raised, or None when it is none of the known kinds."""
    if isinstance(err, MissingConfigException) and err.options is not None and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        return (f"config {group}={option}: no such option; choose one of {', '.join(err.options)} "
                f"(configs/{group}/*.yaml)")
    cause = err.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and getattr(cause, "full_key", None):
        # OmegaConf names the first unknown part (``itoo`` of ``itoo.images``): name what the user typed
        typed = [o.split("=", 1)[0].lstrip("+~") for o in overrides]
        key = next((k for k in typed if f"{k}.".startswith(f"{cause.full_key}.")), str(cause.full_key))
        return unknown_key_message(key, schema)
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        return omegaconf_message(cause)
    return None


def omegaconf_message(err: OmegaConfBaseException) -> str:
    """An OmegaConf type/validation error without its internals: ``config ito.images: Value 'abc' of type ...``."""
    message: Any = getattr(err, "msg", None) or str(err)
    text = str(message).split("\n")[0].split("    full_key:")[0].strip()
    return f"config {getattr(err, 'full_key', '') or '?'}: {text}; check the value's type in ito_core/config/schema.py"
