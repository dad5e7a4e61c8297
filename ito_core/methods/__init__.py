"""The systems ITO is compared with, trained in the same loop: one training model and one objective per
``method.name``.

``clip``, ``siglip`` and ``ito`` are the same :class:`~ito_core.models.ito.ItoModel` and
:class:`~ito_core.losses.ItoObjective` under other ``ito``/``loss`` settings (``configs/method/*.yaml``); the other
methods add training-only modules and losses in their own module here. Every training model keeps its deployable
weights under ``encoder.`` (``ito_core.strip`` drops the rest), returns a dict whose batched outputs have the local
batch as dim 0 (``ito_core.accumulation``), and every objective returns its total under ``"loss"``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ito_core.config import RunConfig
from ito_core.data.augment import MultiViewAugment
from ito_core.losses import build_objective as build_ito_objective
from ito_core.losses import init_logit_bias
from ito_core.methods import slip
from ito_core.methods.flair import build_flair_model, build_flair_objective
from ito_core.methods.oner import build_oner_model
from ito_core.methods.oner_loss import build_oner_objective
from ito_core.models.ito import ItoModel


def _ito_model(cfg: RunConfig) -> nn.Module:
    return ItoModel(cfg.model, cfg.ito, logit_bias=init_logit_bias(cfg.loss))


def _ito_objective(cfg: RunConfig, model: nn.Module, rank: int, world_size: int) -> nn.Module:
    return build_ito_objective(cfg.loss, cfg.ito, rank=rank, world_size=world_size)


MODEL_BUILDERS: dict[str, Callable[[RunConfig], nn.Module]] = {
    "clip": _ito_model, "siglip": _ito_model, "ito": _ito_model,
    "flair": build_flair_model, "oner": build_oner_model, "slip": slip.build_model,
}
OBJECTIVE_BUILDERS: dict[str, Callable[[RunConfig, nn.Module, int, int], nn.Module]] = {
    "clip": _ito_objective, "siglip": _ito_objective, "ito": _ito_objective,
    "flair": build_flair_objective, "oner": build_oner_objective, "slip": slip.build_objective,
}
# Methods whose views are not the loop's M identical-recipe views (MultiViewAugment).
AUGMENT_BUILDERS: dict[str, Callable[[RunConfig], nn.Module]] = {"slip": slip.build_augment}


def build_model(cfg: RunConfig) -> nn.Module:
    """The training model of ``cfg.method.name`` (initial weights from torch's global generator)."""
    return MODEL_BUILDERS[cfg.method.name](cfg)


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> nn.Module:
    """The objective of ``cfg.method.name`` on this rank; ``model`` is the (unwrapped) training model, for the
    methods whose loss calls one of its training-only modules."""
    return OBJECTIVE_BUILDERS[cfg.method.name](cfg, model, rank, world_size)


def build_augment(cfg: RunConfig) -> nn.Module:
    """The training views of ``cfg.method.name``: uint8 ``[B, 3, H, W]`` -> ``[B, ito.images, 3, S, S]``."""
    if cfg.method.name in AUGMENT_BUILDERS:
        return AUGMENT_BUILDERS[cfg.method.name](cfg)
    return MultiViewAugment(image_size=cfg.model.image_size, num_views=cfg.ito.images)
