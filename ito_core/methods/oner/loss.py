"""OneR's contrastive losses (Jang et al., AAAI'23, arXiv 2211.11153), on ``OneRModel``'s outputs.

Every loss is CLIP's symmetric InfoNCE between a query vector q_i and a key vector k_i per sample
(positive: the same sample; negatives: every other sample of the global batch, both directions),
at the model's one learnable temperature. They differ in what q and k are, with
mix(a, b) = normalize((a + b) / 2) and F(.) the L2-normalised read-out of the shared tower:

- ITC: q_i = F(I_i), k_i = F(T_i) (CLIP; a single tower fails with this alone, the paper's Table).
- XMC (cross-modal mixup): q_i = mix(F(I_i), F(T_j)), k_i = mix(F(I_j), F(T_i)) with j = i + 1 (mod
  the global batch). q_i and k_i hold the same two samples with the modalities swapped, while the
  hard negatives k_{i-1} = mix(F(I_i), .) and k_j = mix(., F(T_j)) share q_i's half *in the same
  modality*: the loss is low only when F(I_i) and F(T_i) are interchangeable (an image as close
  to its caption as to itself), which closes the modality gap.
- CIC (contextual invariance): q_i = mix(F(I_i | T_i), F(T_i | I_i)), k_i = mix(F(I_i), F(T_i)).
- CMC (contextual mixup): q_i = F(I_i, T_i | I_i, T_i), k_i = mix(F(I_i), F(T_i)).

Distributed semantics as ``ito_core.losses``: local rows against gathered columns, the gather keeps
the gradient, and the mean of the per-rank losses is the single-process loss of the global batch
(the XMC partner j is a global index, so the last local row's partner lives on the next rank).

Shape suffixes: B local batch, G global batch, D joint dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ito_core.config.schema import RunConfig
from ito_core.losses import ClipLoss, gather_features
from ito_core.methods.oner import LOSSES
from ito_core.shapes import check_scalars, check_shapes

LOSS_NAMES = LOSSES  # the spec's list: the options method.oner_<loss>_weight


def mix(a_XD: Tensor, b_XD: Tensor) -> Tensor:
    """The normalised midpoint of two unit vectors (the paper's (a + b) / 2, on the sphere)."""
    return F.normalize((a_XD + b_XD) / 2, dim=-1)


class OneRObjective(nn.Module):
    """L = w_itc L_itc + w_xmc L_xmc + w_cic L_cic + w_cmc L_cmc; a loss with weight 0 is not computed
    (and the model then skips its joint pass). Holds no parameters."""

    def __init__(self, *, weights: dict[str, float], rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        assert set(weights) == set(LOSS_NAMES), weights
        self.weights = weights
        self.rank, self.world_size = rank, world_size
        self.pair = ClipLoss(rank=rank, world_size=world_size)

    def inputs(self) -> list[str]:
        """The model outputs this objective reads: the joint passes' only when their loss has a positive weight."""
        joint = {"cic": ["cic_image_BD", "cic_text_BD"], "cmc": ["joint_BD"]}
        return ["image_features_BD", "text_features_BD", *(name for loss, names in joint.items()
                                                           if self.weights[loss] > 0 for name in names)]

    def gather(self, x_BD: Tensor) -> Tensor:
        return gather_features(x_BD, rank=self.rank, world_size=self.world_size)

    def local(self, x_GD: Tensor, batch: int) -> Tensor:
        """This rank's rows of a gathered tensor (they carry the gradient back through the gather)."""
        return x_GD[self.rank * batch:(self.rank + 1) * batch]

    def forward(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        img_BD, txt_BD, scale = out["image_features_BD"], out["text_features_BD"], out["logit_scale"]
        check_shapes("OneRObjective", **{name: out[name] for name in self.inputs()})
        check_scalars("OneRObjective", logit_scale=scale)
        batch = img_BD.shape[0]
        all_img_GD, all_txt_GD = self.gather(img_BD), self.gather(txt_BD)
        losses: dict[str, Tensor] = {}
        if self.weights["itc"] > 0:
            losses["itc_loss"] = self.pair.score(img_BD, txt_BD, all_img_GD, all_txt_GD, scale)
        if self.weights["xmc"] > 0:
            partner_img_GD, partner_txt_GD = all_img_GD.roll(-1, 0), all_txt_GD.roll(-1, 0)  # sample i + 1
            q_GD, k_GD = mix(all_img_GD, partner_txt_GD), mix(partner_img_GD, all_txt_GD)
            losses["xmc_loss"] = self.pair.score(self.local(q_GD, batch), self.local(k_GD, batch), q_GD, k_GD, scale)
        if self.weights["cic"] > 0 or self.weights["cmc"] > 0:
            key_BD, key_GD = mix(img_BD, txt_BD), mix(all_img_GD, all_txt_GD)
        if self.weights["cic"] > 0:
            q_BD = mix(out["cic_image_BD"], out["cic_text_BD"])
            losses["cic_loss"] = self.pair.score(q_BD, key_BD, self.gather(q_BD), key_GD, scale)
        if self.weights["cmc"] > 0:
            q_BD = out["joint_BD"]
            losses["cmc_loss"] = self.pair.score(q_BD, key_BD, self.gather(q_BD), key_GD, scale)
        total = torch.stack([self.weights[name[:-5]] * value for name, value in losses.items()]).sum()
        return {"loss": total, **losses, "logit_scale": scale.detach()}


def oner_weights(cfg: RunConfig) -> dict[str, float]:
    """The loss weights of ``method.oner_<loss>_weight``."""
    return {name: float(getattr(cfg.method, f"oner_{name}_weight")) for name in LOSS_NAMES}
