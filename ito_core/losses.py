"""Contrastive losses for ITO pretraining, shaped like open_clip's ``loss.py``.

One free function (:func:`gather_features`) and one ``nn.Module`` per loss:

- :class:`ClipLoss`: symmetric InfoNCE (Radford et al. 2021, arXiv 2103.00020).
- :class:`SigLipLoss`: pairwise sigmoid loss (Zhai et al. 2023, arXiv 2303.15343).
- :class:`MultiAlignLoss`: ITO multiple alignment, the mean of a pair loss over all M x N
  (image view, caption) pairs (ITO, arXiv 2603.02767).
- :class:`FusionLoss`: NT-Xent over fused vectors (SimCLR, Chen et al. 2020, arXiv 2002.05709),
  generalised to K >= 2 positives per sample by averaging over them (SupCon, arXiv 2004.11362).
- :class:`ItoObjective`: the training objective, L = L_align + lambda * L_fusion (ITO, Eq. 5), wired as ITO's
  released code by default (live logit scale, per-view positives).

Distributed semantics (open_clip ``local_loss=True, gather_with_grad=True``): every rank scores
its *local* rows against the *gathered* columns, and the gather keeps the autograd graph. The
per-rank losses averaged over ranks equal the single-process loss on the global batch, and the
per-rank input gradients divided by ``world_size`` (what DDP / DeepSpeed gradient averaging
amounts to) equal the single-process gradients.

Logits and softmax are computed in float32 whatever the feature dtype (e.g. bf16).

Shape suffixes:
    B  local batch (samples on this rank)
    G  global batch (B * world_size)
    M  image views per sample (``ito.images``)
    N  captions per sample (``ito.texts``)
    K  fused vectors per sample (M * N)
    D  joint embedding dim
    W  fused vector dim (the fusion width)
    A  local anchors in the fusion loss (B * K)
    C  candidates in the fusion loss (G * K)
    P  positives per fusion anchor (K - 1)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn

from ito_core.shapes import check_scalars, check_shapes


def gather_features(features: Tensor, *, rank: int, world_size: int) -> Tensor:
    """All-gather ``features`` along dim 0 from every rank, keeping the gradient.

    The backward pass sums each rank's gradient contributions back onto the rank that owns the
    rows. Identity when ``world_size == 1``. Works for any trailing shape (``BD``, ``BMD``...).
    """
    if world_size == 1:
        return features
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            f"gather_features(world_size={world_size}) needs torch.distributed initialised; "
            "call torch.distributed.init_process_group first or pass world_size=1"
        )
    assert dist.get_world_size() == world_size, (dist.get_world_size(), world_size)
    assert dist.get_rank() == rank, (dist.get_rank(), rank)
    return torch.cat(dist_fn.all_gather(features.contiguous()), dim=0)


class PairLoss(nn.Module):
    """An image-text loss split into "gather" and "score" so that callers scoring many pairs
    (:class:`MultiAlignLoss`) gather each tensor once instead of once per pair."""

    def __init__(self, *, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.rank = rank
        self.world_size = world_size

    def gather(self, image_features: Tensor, text_features: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Gathered (image, text) features along dim 0, or None where the loss does not need them."""
        raise NotImplementedError

    def score(
        self,
        image_BD: Tensor,
        text_BD: Tensor,
        all_image_GD: Tensor | None,
        all_text_GD: Tensor | None,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss of the local rows against pre-gathered columns (from :meth:`gather`)."""
        raise NotImplementedError

    def forward(
        self,
        image_features_BD: Tensor,
        text_features_BD: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
    ) -> Tensor:
        owner = type(self).__name__
        check_shapes(owner, image_features_BD=image_features_BD, text_features_BD=text_features_BD)
        check_scalars(owner, logit_scale=logit_scale, logit_bias=logit_bias)
        all_image_GD, all_text_GD = self.gather(image_features_BD, text_features_BD)
        return self.score(
            image_features_BD, text_features_BD, all_image_GD, all_text_GD, logit_scale, logit_bias
        )


class ClipLoss(PairLoss):
    """Symmetric InfoNCE of CLIP (Radford et al. 2021, "Learning Transferable Visual Models From
    Natural Language Supervision", arXiv 2103.00020).

    Local image rows are scored against all gathered texts and local text rows against all
    gathered images; the positive of local row ``i`` is global column ``rank * B + i``.
    Features must be L2-normalised; ``logit_scale`` is the exponentiated scale.
    """

    def gather(self, image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor]:
        return (
            gather_features(image_features, rank=self.rank, world_size=self.world_size),
            gather_features(text_features, rank=self.rank, world_size=self.world_size),
        )

    def score(self, image_BD, text_BD, all_image_GD, all_text_GD, logit_scale, logit_bias=None) -> Tensor:
        scale = logit_scale.float()
        logits_per_image_BG = scale * image_BD.float() @ all_text_GD.float().T
        logits_per_text_BG = scale * text_BD.float() @ all_image_GD.float().T
        if logit_bias is not None:
            logits_per_image_BG = logits_per_image_BG + logit_bias.float()
            logits_per_text_BG = logits_per_text_BG + logit_bias.float()
        batch = image_BD.shape[0]
        labels_B = torch.arange(batch, device=image_BD.device) + self.rank * batch
        return (
            F.cross_entropy(logits_per_image_BG, labels_B) + F.cross_entropy(logits_per_text_BG, labels_B)
        ) / 2


class SigLipLoss(PairLoss):
    """Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image
    Pre-Training", arXiv 2303.15343): ``-1/|B| sum_ij log sigmoid(z_ij (t x_i . y_j + b))`` with
    ``z_ij = +1`` on matching pairs and ``-1`` elsewhere.

    With ``world_size > 1`` the texts are gathered (with gradient) and the local images are
    scored against all of them; each rank normalises by its local batch, so the mean over ranks
    is the paper's loss on the global batch. Needs ``logit_bias`` (the learnable bias ``b``).
    """

    def gather(self, image_features: Tensor, text_features: Tensor) -> tuple[None, Tensor]:
        return None, gather_features(text_features, rank=self.rank, world_size=self.world_size)

    def score(self, image_BD, text_BD, all_image_GD, all_text_GD, logit_scale, logit_bias=None) -> Tensor:
        if logit_bias is None:
            raise ValueError(
                "loss.name='siglip' needs a learnable logit_bias from the model; "
                "build the model with a logit bias or choose loss.name='clip'"
            )
        logits_BG = logit_scale.float() * image_BD.float() @ all_text_GD.float().T + logit_bias.float()
        batch = image_BD.shape[0]
        labels_BG = -torch.ones_like(logits_BG)
        rows_B = torch.arange(batch, device=logits_BG.device)
        labels_BG[rows_B, rows_B + self.rank * batch] = 1.0
        return -F.logsigmoid(labels_BG * logits_BG).sum() / batch


ALIGN_LOSSES: dict[str, type[PairLoss]] = {"clip": ClipLoss, "siglip": SigLipLoss}


def init_logit_bias(name: str, *, siglip_init_bias: float) -> float | None:
    """The model's initial learnable logit bias for the pair loss ``name``: SigLIP learns one, InfoNCE has none."""
    return siglip_init_bias if name == "siglip" else None


def build_align_loss(name: str, *, rank: int, world_size: int) -> PairLoss:
    """The image-text pair loss named by ``loss.name``."""
    if name not in ALIGN_LOSSES:
        raise ValueError(f"loss.name={name!r}; choose one of {sorted(ALIGN_LOSSES)}")
    return ALIGN_LOSSES[name](rank=rank, world_size=world_size)


class MultiAlignLoss(nn.Module):
    """ITO multiple alignment (arXiv 2603.02767): ``pair_loss`` averaged over all M x N
    (image view, caption) pairs of each sample. M = N = 1 is exactly ``pair_loss``.

    Each of the two feature tensors is gathered once; the M x N pair scores reuse it.
    """

    def __init__(self, pair_loss: nn.Module):
        super().__init__()
        if not isinstance(pair_loss, PairLoss):
            raise TypeError(
                f"MultiAlignLoss needs a PairLoss (one of {sorted(ALIGN_LOSSES)}), "
                f"got {type(pair_loss).__name__}"
            )
        self.pair_loss = pair_loss

    def forward(
        self,
        image_features_BMD: Tensor,
        text_features_BND: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
    ) -> dict[str, Tensor]:
        check_shapes("MultiAlignLoss", image_features_BMD=image_features_BMD, text_features_BND=text_features_BND)
        check_scalars("MultiAlignLoss", logit_scale=logit_scale, logit_bias=logit_bias)
        all_image_GMD, all_text_GND = self.pair_loss.gather(image_features_BMD, text_features_BND)
        losses = []
        for m in range(image_features_BMD.shape[1]):
            for n in range(text_features_BND.shape[1]):
                losses.append(
                    self.pair_loss.score(
                        image_features_BMD[:, m],
                        text_features_BND[:, n],
                        None if all_image_GMD is None else all_image_GMD[:, m],
                        None if all_text_GND is None else all_text_GND[:, n],
                        logit_scale,
                        logit_bias,
                    )
                )
        return {"align_loss": torch.stack(losses).mean()}


class FusionLoss(nn.Module):
    """NT-Xent over fused vectors (SimCLR, Chen et al. 2020, "A Simple Framework for Contrastive
    Learning of Visual Representations", arXiv 2002.05709), generalised to K >= 2 fused vectors
    per sample as in SupCon (Khosla et al. 2020, arXiv 2004.11362, L_out).

    Every local fused vector is an anchor; its softmax runs over all other ``G * K - 1`` gathered
    vectors (itself excluded) at temperature ``1 / logit_scale``, and its loss is minus the mean
    log-probability of its K - 1 positives (the other fused vectors of the same sample). For
    K = 2 this is SimCLR's NT-Xent. Features must be L2-normalised.
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1):
        super().__init__()
        self.rank = rank
        self.world_size = world_size

    def forward(self, fused_BKD: Tensor, logit_scale: Tensor) -> dict[str, Tensor]:
        check_shapes("FusionLoss", fused_BKD=fused_BKD)
        check_scalars("FusionLoss", logit_scale=logit_scale)
        batch, k, dim = fused_BKD.shape
        if k < 2:
            raise ValueError(
                f"FusionLoss got K={k} fused view(s) per sample; fusion needs >= 2 fused views "
                "(ito.images * ito.texts >= 2): raise ito.images or ito.texts, or set ito.fusion=none"
            )
        all_GKD = gather_features(fused_BKD, rank=self.rank, world_size=self.world_size)
        anchors_AD = fused_BKD.float().reshape(batch * k, dim)
        cands_CD = all_GKD.float().reshape(-1, dim)
        logits_AC = logit_scale.float() * anchors_AD @ cands_CD.T

        device = fused_BKD.device
        anchor_A = torch.arange(batch * k, device=device)
        self_A = anchor_A + self.rank * batch * k  # global column of each anchor
        is_self_AC = torch.zeros_like(logits_AC, dtype=torch.bool)
        is_self_AC[anchor_A, self_A] = True
        log_prob_AC = F.log_softmax(logits_AC.masked_fill(is_self_AC, float("-inf")), dim=1)

        # Positives of anchor (sample s, view v): columns s*K + j for every j != v.
        others_KP = torch.tensor(
            [[j for j in range(k) if j != v] for v in range(k)], device=device, dtype=torch.long
        )
        sample_start_A = self_A - self_A % k
        pos_AP = sample_start_A[:, None] + others_KP[anchor_A % k]
        loss = -log_prob_AC.gather(1, pos_AP).mean()
        return {"fusion_loss": loss}


class ItoObjective(nn.Module):
    """L = L_align (mean over all M x N view/caption pairs) + lambda * L_fusion (ITO, Eq. 5), on the outputs of
    ``ItoModel``. With M = N = 1 and no fused vectors it is exactly the pair loss.

    Two switches pick between ITO's released code (the defaults) and this project's first reading of the paper:

    - ``fusion_scale``: ``live`` passes CLIP's logit scale to the fusion loss, so that loss also trains the
      temperature (ITO's code); ``detached`` uses its value only.
    - ``fusion_positives``: ``view_mean`` averages each view's N fused vectors over the captions, renormalises, and
      contrasts the M views (NT-Xent for M = 2, ITO's code); ``supcon`` contrasts all K = M x N fused vectors. Both
      are the same loss when N = 1.
    """

    def __init__(self, pair_loss: PairLoss, *, fusion_weight: float, fusion_scale: str = "live",
                 fusion_positives: str = "view_mean", rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.align = MultiAlignLoss(pair_loss)
        self.fusion = FusionLoss(rank=rank, world_size=world_size)
        self.fusion_weight = fusion_weight
        self.fusion_scale, self.fusion_positives = fusion_scale, fusion_positives

    def forward(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        image_BMD, text_BND = out["image_features_BMD"], out["text_features_BND"]
        self.check_inputs(out)
        losses = self.align(image_BMD, text_BND, out["logit_scale"], out.get("logit_bias"))
        total = losses["align_loss"]
        if "fused_BKD" in out:
            scale = out["logit_scale"] if self.fusion_scale == "live" else out["logit_scale"].detach()
            losses.update(self.fusion(self.fusion_positive_set(out["fused_BKD"], views=image_BMD.shape[1]), scale))
            total = total + self.fusion_weight * losses["fusion_loss"]
        return {"loss": total, **losses, "logit_scale": out["logit_scale"].detach()}

    @staticmethod
    def check_inputs(out: dict[str, Tensor]) -> None:
        """Image views and captions of the same samples; one fused vector per (view, caption) pair, ``[B, M x N, W]``
        (W: the fusion width)."""
        dims = check_shapes("ItoObjective", image_features_BMD=out["image_features_BMD"],
                            text_features_BND=out["text_features_BND"])
        check_scalars("ItoObjective", logit_scale=out["logit_scale"], logit_bias=out.get("logit_bias"))
        if "fused_BKD" in out:
            check_shapes("ItoObjective", {"B": (dims["B"], "the batch of image_features_BMD"),
                                          "K": (dims["M"] * dims["N"], f"M x N = {dims['M']} x {dims['N']}, one "
                                                "per image view and caption")}, fused_BKD=out["fused_BKD"])

    def fusion_positive_set(self, fused_BKD: Tensor, *, views: int) -> Tensor:
        """The fused vectors the fusion loss contrasts: all K, or one per view (``view_mean``), ``[B, K', D]``."""
        if self.fusion_positives == "supcon" or fused_BKD.shape[1] == views:  # N = 1: the same vectors
            return fused_BKD
        batch, k, dim = fused_BKD.shape
        # Fused index k = m * N + n (ItoModel._fuse): average over n within each view m.
        return F.normalize(fused_BKD.view(batch, views, k // views, dim).mean(dim=2), dim=-1)


def build_objective(name: str, *, fusion_weight: float, fusion_scale: str = "live", fusion_positives: str = "view_mean",
                    rank: int, world_size: int) -> ItoObjective:
    """The ITO objective with the pair loss ``name`` (``ALIGN_LOSSES``) on this rank."""
    pair = build_align_loss(name, rank=rank, world_size=world_size)
    return ItoObjective(pair, fusion_weight=fusion_weight, fusion_scale=fusion_scale,
                        fusion_positives=fusion_positives, rank=rank, world_size=world_size)
