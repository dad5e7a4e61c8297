"""SLIP: CLIP plus SimCLR on the image tower (Mu et al. 2022, "SLIP: Self-supervision meets Language-Image
Pre-training", arXiv 2112.12750; code facebookresearch/SLIP, ``models.SLIP``, ``losses.SLIPLoss``).

Each sample brings 3 image views (``ito.images = 3``) and its caption(s): view 0 is the CLIP view, aligned with
the caption by CLIP's InfoNCE; views 1 and 2 are SimCLR views (SimCLR's stronger augmentation,
:func:`ito_core.data.augment.simclr_views`). Their pooled image features *before* the joint projection go through a
training-only 3-layer MLP (Linear-BN-ReLU-Linear-BN-ReLU-Linear, hidden 4096, out 256) and NT-Xent at
temperature 0.1 pulls the two views of a sample together:

    L = L_clip(view 0, caption) + slip_weight * L_simclr(view 1, view 2)

The MLP lives beside ``encoder.`` (as ``ssl_head.``), so strip drops it: the deployed model is a plain CLIP dual
encoder. Batch statistics of its BatchNorms run over the GLOBAL batch (SLIP uses SyncBatchNorm), computed with
autograd-aware all-gathers that also work on CPU/gloo, so 2 ranks train exactly as one process on the joined batch.

Shape legend: B local batch, V SSL views (2), C/H/W pixels, L tokens, D vision width, S SSL embedding dim.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ito_core.config.schema import RunConfig
from ito_core.data.augment import MultiViewAugment, simclr_views
from ito_core.losses import ClipLoss, FusionLoss, MultiAlignLoss, gather_features, init_logit_bias
from ito_core.models.ito import ItoModel
from ito_core.shapes import check_shapes

CLIP_VIEWS = 1  # view 0 feeds CLIP; the rest feed SimCLR
SSL_VIEWS = 2  # SLIP's two SimCLR crops


def sum_over_ranks(t: Tensor) -> Tensor:
    """``t`` summed over every rank, keeping the gradient (identity without a process group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    return gather_features(t[None], rank=dist.get_rank(), world_size=dist.get_world_size()).sum(0)


class GlobalBatchNorm(nn.Module):
    """BatchNorm over the batch of every rank (SyncBatchNorm's statistics), for inputs ``[B, V, C]``.

    Statistics are per view ``v`` and channel: SLIP runs its MLP on each augmented batch separately, so each view
    is normalised by its own batch. torch's SyncBatchNorm needs CUDA; two gathers of a ``[V, C]`` sum (mean, then
    the centred sum of squares, numerically stable) do the same on any backend, gradient included. No running
    statistics: the head is training-only and always normalises with batch statistics, as in training.
    """

    def __init__(self, channels: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x_BVC: Tensor) -> Tensor:
        one_rank = not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1
        # torch's BatchNorm1d and SyncBatchNorm refuse this in training; with no running statistics, so do we in eval.
        if x_BVC.shape[0] == 1 and one_rank:
            raise ValueError(f"GlobalBatchNorm: a batch of 1 (input shape {tuple(x_BVC.shape)}) has no batch "
                             "statistics: the output would be the bias whatever the input; train with at least 2 "
                             "samples per step (train.batch_size, train.micro_batch_size)")
        # Statistics in at least float32 (bf16 sums over a large batch would drift), as torch's BatchNorm does.
        dtype = torch.promote_types(x_BVC.dtype, torch.float32)
        x = x_BVC.to(dtype)
        count = sum_over_ranks(x.new_tensor([float(x.shape[0])]))
        mean_VC = sum_over_ranks(x.sum(0)) / count
        centred_BVC = x - mean_VC
        var_VC = sum_over_ranks(centred_BVC.square().sum(0)) / count  # biased, as BatchNorm normalises
        out = centred_BVC * torch.rsqrt(var_VC + self.eps) * self.weight.to(dtype) + self.bias.to(dtype)
        return out.to(x_BVC.dtype)


class SlipHead(nn.Sequential):
    """SLIP's ``_build_mlp``: Linear-BN-ReLU-Linear-BN-ReLU-Linear on ``[B, V, D]`` -> ``[B, V, S]``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden), GlobalBatchNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), GlobalBatchNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )


class SlipModel(ItoModel):
    """The dual encoder (``encoder.``, deployed) and the SimCLR head (``ssl_head.``, training-only).

    ``forward`` returns ItoModel's outputs for the CLIP view (``image_features_BMD`` with M = 1, the captions'
    ``text_features_BND``, ``logit_scale``) plus ``ssl_features_BVS``, the L2-normalised head outputs of the SSL
    views (SLIP's loss normalises them)."""

    def __init__(self, cfg: RunConfig) -> None:
        super().__init__(cfg.model, cfg.ito, logit_bias=init_logit_bias(cfg.loss.name,
                                                                       siglip_init_bias=cfg.loss.siglip_init_bias))
        method = cfg.method
        self.ssl_head = SlipHead(cfg.model.vision_width, method.slip_hidden, method.slip_dim)  # type: ignore[attr-defined]

    def forward(self, images_BMCHW: Tensor, tokens_BNL: Tensor) -> dict[str, Tensor]:
        B, M = images_BMCHW.shape[:2]
        assert M == CLIP_VIEWS + SSL_VIEWS, f"SLIP needs {CLIP_VIEWS + SSL_VIEWS} views per sample, got {M}"
        out = super().forward(images_BMCHW[:, :CLIP_VIEWS], tokens_BNL)
        # Unprojected pooled features, as SLIP's head reads ``self.visual(aug)`` (the timm ViT's pooled output).
        pooled_PD, _ = self.encoder.visual(images_BMCHW[:, CLIP_VIEWS:].flatten(0, 1), project=False)
        ssl_BVS = self.ssl_head(pooled_PD.view(B, SSL_VIEWS, -1))
        out["ssl_features_BVS"] = F.normalize(ssl_BVS, dim=-1)
        return out


class SlipObjective(nn.Module):
    """SLIP's loss (``losses.SLIPLoss``): CLIP InfoNCE on view 0 (averaged over the captions when
    ``ito.texts > 1``) + ``ssl_weight`` x SimCLR's NT-Xent at ``temperature`` over the two SSL views.

    The NT-Xent is :class:`FusionLoss` with K = 2 and scale 1 / temperature: every local SSL vector is an anchor
    against all 2G gathered ones minus itself, the other view of its sample is the positive, the loss is the mean
    over anchors, which is exactly ``losses.SIMCLRLoss`` (its ``(loss_a + loss_b) / 2``; a 1e9 mask there, -inf
    here). The features are gathered with their gradient, as SLIP's ``all_gather_batch_with_grad``. Holds no
    parameters."""

    def __init__(self, *, temperature: float, ssl_weight: float, rank: int = 0, world_size: int = 1) -> None:
        super().__init__()
        self.align = MultiAlignLoss(ClipLoss(rank=rank, world_size=world_size))
        self.simclr = FusionLoss(rank=rank, world_size=world_size)
        self.temperature, self.ssl_weight = temperature, ssl_weight

    def forward(self, out: dict[str, Tensor]) -> dict[str, Tensor]:
        ssl_BVS = out["ssl_features_BVS"]
        check_shapes("SlipObjective", image_features_BMD=out["image_features_BMD"],
                     text_features_BND=out["text_features_BND"], ssl_features_BVS=ssl_BVS)
        align = self.align(out["image_features_BMD"], out["text_features_BND"], out["logit_scale"],
                           out.get("logit_bias"))["align_loss"]
        scale = torch.tensor(1.0 / self.temperature, device=ssl_BVS.device)
        ssl = self.simclr(ssl_BVS, scale)["fusion_loss"]
        total = align + self.ssl_weight * ssl
        return {"loss": total, "align_loss": align, "ssl_loss": ssl, "logit_scale": out["logit_scale"].detach()}


class SlipViews(nn.Module):
    """uint8 [B, 3, H, W] -> [B, 3, 3, S, S]: view 0 with the loop's usual recipe (the view method=clip trains on),
    views 1-2 with SimCLR's (:func:`simclr_views`)."""

    def __init__(self, *, image_size: int) -> None:
        super().__init__()
        self.clip = MultiViewAugment(image_size=image_size, num_views=CLIP_VIEWS)
        self.ssl = simclr_views(image_size=image_size, num_views=SSL_VIEWS)

    def forward(self, images_BCHW: Tensor) -> Tensor:
        return torch.cat([self.clip(images_BCHW), self.ssl(images_BCHW)], dim=1)


def build_model(cfg: RunConfig) -> SlipModel:
    return SlipModel(cfg)


def build_objective(cfg: RunConfig, model: nn.Module, *, rank: int, world_size: int) -> SlipObjective:
    method = cfg.method
    return SlipObjective(temperature=method.slip_temperature, ssl_weight=method.slip_weight,  # type: ignore[attr-defined]
                         rank=rank, world_size=world_size)


def build_augment(cfg: RunConfig) -> SlipViews:
    return SlipViews(image_size=cfg.model.image_size)
