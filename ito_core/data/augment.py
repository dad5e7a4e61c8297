"""ITO image views: decode once upstream, then augment each image M times in one batched kornia call.

Recipe (ITO paper, as OpenCLIP's SimCLR-style views): RandomResizedCrop scale (0.5, 1.0),
ColorJitter (0.4, 0.4, 0.4, 0.1) with p=0.8, RandomGrayscale p=0.2, CLIP normalisation.
SLIP's SSL views (:func:`simclr_views`) use SimCLR's full recipe: crop scale (0.08, 1.0), the same jitter and
grayscale, GaussianBlur p=0.5 and a horizontal flip.

Randomness: kornia draws every parameter through ``torch.distributions`` / ``torch.rand`` on
the module's device, i.e. from torch's global generator (the CPU one unless the module was
moved to CUDA, then that device's). Saving ``torch.get_rng_state()`` (plus the CUDA states when
the module lives on a GPU) and restoring it reproduces the views bit-exactly.

Shape legend: B batch, M views per image, C channels (3), H/W input size, S output size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia import augmentation as K
from torch import nn

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MultiViewAugment(nn.Module):
    """uint8 images [B, 3, H, W] -> M normalised random views, float [B, M, 3, S, S]."""

    def __init__(
        self,
        *,
        image_size: int,
        num_views: int,
        scale: tuple[float, float] = (0.5, 1.0),
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        gray_p: float = 0.2,
        blur_p: float = 0.0,
        flip_p: float = 0.0,
    ) -> None:
        super().__init__()
        if num_views < 1:
            raise ValueError(f"num_views={num_views} (ito.images); need at least one view")
        if image_size < 1:
            raise ValueError(f"image_size={image_size} (model.image_size); need a positive size")
        self.image_size = image_size
        self.num_views = num_views
        brightness, contrast, saturation, hue = jitter
        steps = [
            K.RandomResizedCrop((image_size, image_size), scale=scale),
            K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p),
            K.RandomGrayscale(p=gray_p),
        ]
        # Blur and flip only when asked: the default recipe draws exactly the random numbers it always drew.
        if blur_p > 0:
            steps.append(_simclr_blur(image_size, blur_p))
        if flip_p > 0:
            steps.append(K.RandomHorizontalFlip(p=flip_p))
        self.views = K.AugmentationSequential(*steps)
        self.register_buffer("mean_C11", torch.tensor(CLIP_MEAN).view(3, 1, 1), persistent=False)
        self.register_buffer("std_C11", torch.tensor(CLIP_STD).view(3, 1, 1), persistent=False)

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        _check_images(images_BCHW)
        B = images_BCHW.shape[0]
        # Views of one image are adjacent (b0v0, b0v1, ..., b1v0, ...), so view() below splits B from M.
        pixels_PCHW = images_BCHW.repeat_interleave(self.num_views, dim=0).float().div_(255.0)
        views_PCSS = self.views(pixels_PCHW)
        views_PCSS = (views_PCSS - self.mean_C11) / self.std_C11
        return views_PCSS.view(B, self.num_views, 3, self.image_size, self.image_size)


def simclr_views(*, image_size: int, num_views: int) -> MultiViewAugment:
    """SimCLR's augmentation as SLIP uses it for its SSL views (SLIP ``datasets.get_dataset``)."""
    return MultiViewAugment(image_size=image_size, num_views=num_views, scale=(0.08, 1.0), blur_p=0.5, flip_p=0.5)


def _simclr_blur(image_size: int, p: float) -> nn.Module:
    """SimCLR's GaussianBlur: sigma uniform in [0.1, 2.0] pixels at 224 px (SLIP blurs the 224 crop), scaled to
    ``image_size`` so smaller images get the same relative blur; kernel about 10% of the side (SimCLR), odd."""
    ratio = image_size / 224
    kernel = max(3, int(0.1 * image_size) // 2 * 2 + 1)
    return K.RandomGaussianBlur(kernel, (0.1 * ratio, 2.0 * ratio), p=p)


def eval_transform(images_BCHW: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float [B, 3, S, S]: resize shorter side (bicubic), centre crop, normalise."""
    _check_images(images_BCHW)
    pixels_BCHW = images_BCHW.float().div_(255.0)
    height, width = pixels_BCHW.shape[-2:]
    scale = image_size / min(height, width)
    size = (max(image_size, round(height * scale)), max(image_size, round(width * scale)))
    if size != (height, width):
        # Bicubic overshoots: clamp back to the valid pixel range before normalising.
        pixels_BCHW = F.interpolate(pixels_BCHW, size=size, mode="bicubic", antialias=True).clamp_(0.0, 1.0)
    top, left = (size[0] - image_size) // 2, (size[1] - image_size) // 2
    pixels_BCHW = pixels_BCHW[..., top : top + image_size, left : left + image_size]
    mean_C11 = torch.tensor(CLIP_MEAN, device=pixels_BCHW.device).view(3, 1, 1)
    std_C11 = torch.tensor(CLIP_STD, device=pixels_BCHW.device).view(3, 1, 1)
    return (pixels_BCHW - mean_C11) / std_C11


def _check_images(images_BCHW: torch.Tensor) -> None:
    if images_BCHW.dtype != torch.uint8 or images_BCHW.ndim != 4 or images_BCHW.shape[1] != 3:
        raise TypeError(
            f"expected uint8 images [B, 3, H, W], got {images_BCHW.dtype} {tuple(images_BCHW.shape)}"
        )
