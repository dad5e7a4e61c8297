"""The training model and objective of ITO and of the systems that are ITO under other settings (CLIP, SigLIP):
:class:`~ito_core.models.ito.ItoModel` and :class:`~ito_core.losses.ItoObjective`, from the ``ito`` and ``loss``
sections (the config -> objective mapping: ``ito_core.losses`` knows no config)."""

from __future__ import annotations

from torch import nn

from ito_core.config.schema import RunConfig
from ito_core.losses import ItoObjective, init_logit_bias
from ito_core.losses import build_objective as build_ito_objective
from ito_core.models.ito import ItoModel


def build_model(cfg: RunConfig) -> ItoModel:
    return ItoModel(cfg.model, cfg.ito, logit_bias=init_logit_bias(cfg.loss.name,
                                                                   siglip_init_bias=cfg.loss.siglip_init_bias))


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> ItoObjective:
    ito = cfg.ito
    return build_ito_objective(cfg.loss.name, fusion_weight=ito.fusion_weight, fusion_scale=ito.fusion_scale,
                               fusion_positives=ito.fusion_positives, rank=rank, world_size=world_size)
