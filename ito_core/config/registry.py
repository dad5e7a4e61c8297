"""The kinds a config can name, each with where its code lives, in one table per kind of choice. Validation reads
a table's names; the code that dispatches on the choice resolves the same table, so the two cannot drift.

Entries are ``"module"`` or ``"module:attribute"`` strings, imported only when resolved: loading and validating a
config imports none of the readers (no PIL, numpy or torch), and ``config`` stays below the layers it names.
"""

from __future__ import annotations

import importlib
from typing import Any

# data.input_kind (data=raw) -> the module under ito_core/data/sources/ that reads it: ``records(data)`` yields its
# RawRecords in their fixed order; a kind that can count its records without reading the images also defines
# ``record_counts(data)`` and takes ``records(data, start=, counts=)``.
RAW_INPUT_KINDS = {
    "img2dataset": "ito_core.data.sources.img2dataset",
    "table": "ito_core.data.sources.table",
    "folder": "ito_core.data.sources.folder",
}
# eval.datasets.<name>=<layout>:<path> -> its reader ``(SourceSpec, *, max_samples) -> EvalSource``
# (ito_core/data/eval_layouts.py; the layouts are described in ito_core/data/eval_sets.py).
EVAL_LAYOUTS = {
    "folder": "ito_core.data.eval_layouts:read_folder",
    "imagenet": "ito_core.data.eval_layouts:read_imagenet",
    "cifar10": "ito_core.data.eval_layouts:read_cifar",
    "cifar100": "ito_core.data.eval_layouts:read_cifar",
    "karpathy": "ito_core.data.eval_layouts:read_karpathy",
    "wds": "ito_core.data.eval_layouts:read_wds",
}
EVAL_LAYOUT_OPTIONS = {"karpathy": ("images",)}  # layout -> the ?options its spec takes


def resolve(table: dict[str, str], name: str) -> Any:
    """The module or attribute ``table[name]`` points at, imported now. Callers check ``name`` first (validation
    does, naming the key); an unknown name here is a bug."""
    module, _, attribute = table[name].partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded
