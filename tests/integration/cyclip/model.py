"""CyCLIP's training model (ITO's model at one view and one caption) and objective.

Distributed semantics as ``ito_core.losses``: local rows against gathered columns, so the mean of the per-rank
losses is the single-process loss on the global batch. Shape suffixes: B local batch, G global batch, D joint dim.
"""

from __future__ import annotations

from torch import Tensor, nn

from ito_core.config.schema import RunConfig
from ito_core.losses import ClipLoss, gather_features
from ito_core.models.ito import ItoModel


class CyclipObjective(nn.Module):
    """L = L_clip + w_in * L_inmodal + w_cross * L_crossmodal, the cyclic terms G x the mean squared difference of
    the similarity matrices (the released code's ``square().mean() / scale**2 * batch_size``)."""

    def __init__(self, *, inmodal_weight: float, crossmodal_weight: float, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.clip = ClipLoss(rank=rank, world_size=world_size)
        self.weights = (inmodal_weight, crossmodal_weight)
        self.rank, self.world_size = rank, world_size

    def forward(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        img_BD, txt_BD = out["image_features_BMD"][:, 0], out["text_features_BND"][:, 0]
        all_img_GD = gather_features(img_BD, rank=self.rank, world_size=self.world_size)
        all_txt_GD = gather_features(txt_BD, rank=self.rank, world_size=self.world_size)
        align = self.clip.score(img_BD, txt_BD, all_img_GD, all_txt_GD, out["logit_scale"])
        G = all_img_GD.shape[0]
        inmodal = G * (img_BD.float() @ all_img_GD.float().T - txt_BD.float() @ all_txt_GD.float().T).square().mean()
        cross = G * (img_BD.float() @ all_txt_GD.float().T - txt_BD.float() @ all_img_GD.float().T).square().mean()
        total = align + self.weights[0] * inmodal + self.weights[1] * cross
        return {"loss": total, "align_loss": align, "inmodal_loss": inmodal, "crossmodal_loss": cross,
                "logit_scale": out["logit_scale"].detach()}


def build_model(cfg: RunConfig) -> ItoModel:
    return ItoModel(cfg.model, cfg.ito, logit_bias=None)


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> CyclipObjective:
    method = cfg.method
    return CyclipObjective(inmodal_weight=method.cyclip_inmodal_weight,  # type: ignore[attr-defined]
                           crossmodal_weight=method.cyclip_crossmodal_weight,  # type: ignore[attr-defined]
                           rank=rank, world_size=world_size)

