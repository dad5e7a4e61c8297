"""The systems ITO is compared with, trained in the same loop: one package per ``method.name`` (its spec, options,
validation and torch code; ``ito_core.methods.spec``), found by ``ito_core.methods.registry``.

Every training model keeps its deployable weights under ``encoder.`` (``ito_core.strip`` drops the rest), returns a
dict whose batched outputs have the local batch as dim 0 (``ito_core.accumulation``), and every objective returns its
total under ``"loss"``. This module is torch-free: the builders below import a method's torch code when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ito_core.methods import registry
from ito_core.methods.spec import resolve

# The loop's M identical-recipe views, for methods whose builders define no build_augment (imported when called).
DEFAULT_AUGMENT = "ito_core.data.augment:MultiViewAugment"

if TYPE_CHECKING:
    from torch import nn

    from ito_core.config.schema import RunConfig


def _builders(cfg: RunConfig):  # noqa: ANN202 (a module)
    return importlib.import_module(registry.get(cfg.method.name).builders)


def build_model(cfg: RunConfig) -> nn.Module:
    """The training model of ``cfg.method.name`` (initial weights from torch's global generator)."""
    return _builders(cfg).build_model(cfg)


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> nn.Module:
    """The objective of ``cfg.method.name`` on this rank; ``model`` is the (unwrapped) training model, for the
    methods whose loss calls one of its training-only modules."""
    return _builders(cfg).build_objective(cfg, model, rank=rank, world_size=world_size)


def build_augment(cfg: RunConfig) -> nn.Module:
    """The training views of ``cfg.method.name``: uint8 ``[B, 3, H, W]`` -> ``[B, ito.images, 3, S, S]``; the loop's
    M identical-recipe views unless the method's builders define their own."""
    builders = _builders(cfg)
    if hasattr(builders, "build_augment"):
        return builders.build_augment(cfg)
    return resolve(DEFAULT_AUGMENT)(image_size=cfg.model.image_size, num_views=cfg.ito.images)
