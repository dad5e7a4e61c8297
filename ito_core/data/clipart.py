"""Clip-art PNGs as training and eval images: transparency flattened, and a near-duplicate check across packages.

Many Tux Paint stamps were drawn from the Open Clip Art Library, so the same drawing can sit in both Debian
packages at other sizes, crops or mirrored. ``NearDuplicateIndex`` finds them by a fingerprint: the drawing
cropped to its ink (non-white pixels), padded square, shrunk to 16x16 RGB. Two drawings are near-duplicates
when their ink aspect ratios agree within ``MAX_LOG_ASPECT`` and the RMS difference of their fingerprints is
below ``MAX_RELATIVE_DISTANCE`` of their mean ink (so faint line art is not matched by its white space), the
reference also compared mirrored. The thresholds were set on the two packages (docs/DATA.md): every true pair
found by eye lies below 0.3, and what else lies there is mostly round things (coins against planets), which
costs a training image each; a missed pair would put an eval image into training.

Shape legend: F = fingerprint values (16 x 16 x 3), R = reference fingerprints.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit (data.max_pixels' default): larger PNGs are skipped
FINGERPRINT_SIDE = 16
MAX_RELATIVE_DISTANCE = 0.3  # RMS fingerprint difference / mean ink of the pair
MAX_LOG_ASPECT = 0.2  # |log(aspect a / aspect b)| of the inked boxes
MIN_INK = 2.0  # mean ink (0-255) below which a drawing is too faint to compare
LIGHT_DRAWING = 224  # mean grey (0-255) of the drawn pixels above which a drawing goes onto black
_INK_LEVEL = 8  # a pixel this much darker than white (in grey) counts as ink


class BlankImageError(ValueError):
    """A PNG whose every pixel is fully transparent (nothing was drawn; several openclipart gradients)."""


def open_flattened(path: Path) -> Image.Image:
    """The PNG at ``path`` as a square RGB image: transparency flattened onto white, or onto black for a light
    drawing (a white-on-transparent stamp would vanish on white), padded square with that background so prep's
    centre crop keeps the whole drawing. ``BlankImageError`` when nothing is drawn, ``ValueError`` beyond
    ``MAX_PIXELS`` (checked before decoding), ``OSError`` for an unreadable file."""
    try:
        with warnings.catch_warnings():  # PIL warns from MAX_PIXELS up and raises at twice that: one limit, ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: {err}") from None
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise ValueError(f"{path}: {width}x{height} pixels is over the {MAX_PIXELS} pixel limit")
        rgba = image.convert("RGBA")
    alpha_HW = np.asarray(rgba.getchannel("A"), dtype=np.float64)
    if not alpha_HW.any():
        raise BlankImageError(f"{path}: every pixel is transparent")
    grey_HW = np.asarray(rgba.convert("L"), dtype=np.float64)
    light = (grey_HW * alpha_HW).sum() / alpha_HW.sum() > LIGHT_DRAWING
    side = max(width, height)
    background = Image.new("RGBA", (side, side), (0, 0, 0, 255) if light else (255, 255, 255, 255))
    background.alpha_composite(rgba, dest=((side - width) // 2, (side - height) // 2))
    return background.convert("RGB")


def pad_square(image: Image.Image) -> Image.Image:
    """White-pad to a square."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


@dataclass(frozen=True)
class Fingerprint:
    ink_F: np.ndarray  # 255 - pixel of the inked box, padded square, shrunk; float32
    aspect: float  # width / height of the inked box

    @property
    def ink(self) -> float:
        return float(self.ink_F.mean())


def fingerprint(image: Image.Image) -> Fingerprint:
    """The drawing's fingerprint: cropped to its ink, padded square with white, box-shrunk to 16x16 RGB."""
    inked = ImageOps.invert(image.convert("L")).point(lambda v: 255 if v > _INK_LEVEL else 0).getbbox()
    if inked:
        image = image.crop(inked)
    square = pad_square(image.convert("RGB"))
    small = square.resize((FINGERPRINT_SIDE, FINGERPRINT_SIDE), Image.Resampling.BOX)
    ink_F = 255.0 - np.asarray(small, dtype=np.float32).reshape(-1)
    return Fingerprint(ink_F, image.width / max(image.height, 1))


class NearDuplicateIndex:
    """Reference drawings (each also mirrored) that ``matches`` compares a drawing against."""

    def __init__(self, images: list[Image.Image]) -> None:
        prints = [fingerprint(view) for image in images for view in (image, ImageOps.mirror(image))]
        prints = [p for p in prints if p.ink >= MIN_INK]
        self._ink_RF = np.stack([p.ink_F for p in prints]) if prints else np.zeros((0, 3 * FINGERPRINT_SIDE ** 2))
        self._log_aspect_R = np.log([p.aspect for p in prints]) if prints else np.zeros(0)
        self._sq_norm_R = (self._ink_RF ** 2).sum(axis=1)

    def matches(self, image: Image.Image) -> bool:
        """Whether ``image`` is a near-duplicate of a reference drawing (mirrored or not)."""
        probe = fingerprint(image)
        if probe.ink < MIN_INK or not len(self._ink_RF):
            return False
        # Squared distances by the expansion |a|^2 + |b|^2 - 2ab: one matrix-vector product per probe.
        sq_dist_R = np.maximum(self._sq_norm_R + (probe.ink_F ** 2).sum() - 2 * self._ink_RF @ probe.ink_F, 0.0)
        rms_R = np.sqrt(sq_dist_R / probe.ink_F.size)
        mean_ink_R = (self._ink_RF.mean(axis=1) + probe.ink) / 2
        close_R = rms_R <= MAX_RELATIVE_DISTANCE * mean_ink_R
        same_shape_R = np.abs(self._log_aspect_R - np.log(max(probe.aspect, 1e-6))) <= MAX_LOG_ASPECT
        return bool((close_R & same_shape_R).any())
