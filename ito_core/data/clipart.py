"""Clip-art PNGs as training and eval images: transparency flattened, and a near-duplicate check across packages.

Many Tux Paint stamps were drawn from the Open Clip Art Library, so the same drawing can sit in both Debian
packages at other sizes, crops or mirrored. ``NearDuplicateIndex`` finds them by a fingerprint: the drawing's ink
(its difference from the background) cropped to the inked box, padded square, shrunk to 16x16 RGB. Two drawings
are near-duplicates when their ink aspect ratios agree within ``MAX_LOG_ASPECT`` and the RMS difference of their
fingerprints is below ``MAX_RELATIVE_DISTANCE`` of their mean ink (so faint line art is not matched by its empty
space), the reference also compared mirrored. The thresholds were set on the two packages (docs/DATA.md): every
true pair found by eye lies below 0.3, and what else lies there is mostly round things (coins against planets),
which costs a training image each; a missed pair would put an eval image into training.

Shape legend: F = fingerprint values (16 x 16 x 3), R = reference fingerprints.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 89_478_485  # PIL's decompression-bomb limit (data.max_pixels' default): larger PNGs are skipped
MAX_SIDE = 512  # drawings are box-shrunk to at most this side: prep stores data.image_size (32 in the demo)
FINGERPRINT_SIDE = 16
MAX_RELATIVE_DISTANCE = 0.3  # RMS fingerprint difference / mean ink of the pair
MAX_LOG_ASPECT = 0.2  # |log(aspect a / aspect b)| of the inked boxes
MIN_INK = 2.0  # mean ink (0-255) below which a drawing is too faint to compare
LIGHT_DRAWING = 224  # mean grey (0-255) of the drawn pixels above which a drawing goes onto black
_INK_LEVEL = 8  # a pixel this far from the background (in its most different channel) counts as ink


WHITE, BLACK = (255, 255, 255), (0, 0, 0)
# What a missing, corrupt, oversized or blank PNG raises (PIL: OSError, SyntaxError, ValueError).
BAD_PNG = (OSError, SyntaxError, ValueError)


class BlankImageError(ValueError):
    """A PNG whose every pixel is fully transparent (nothing was drawn; several openclipart gradients)."""


@dataclass(frozen=True)
class Drawing:
    image: Image.Image  # RGB, square
    background: tuple[int, int, int]  # what transparency became: ink is the difference from it


def open_drawing(path: Path) -> Drawing:
    """The PNG at ``path`` as a square RGB drawing: transparency flattened onto white, or onto black for a light
    drawing (a white-on-transparent stamp would vanish on white), padded square with that background so prep's
    centre crop keeps the whole drawing, and shrunk by an integer factor to at most ``MAX_SIDE``.
    ``BlankImageError`` when nothing is drawn, ``ValueError`` beyond ``MAX_PIXELS`` (checked before decoding),
    ``OSError`` for an unreadable file."""
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
    factor = -(-max(width, height) // MAX_SIDE)  # ceil: integer box shrinks are cheap and exact
    # Statistics on a shrunk copy: numpy over a 3500 px drawing costs more than decoding it.
    small = rgba.reduce(factor) if factor > 1 else rgba
    alpha_HW = np.asarray(small.getchannel("A"), dtype=np.float64)
    if rgba.getchannel("A").getbbox() is None:
        raise BlankImageError(f"{path}: every pixel is transparent")
    grey_HW = np.asarray(small.convert("L"), dtype=np.float64)
    colour = BLACK if (grey_HW * alpha_HW).sum() / max(alpha_HW.sum(), 1e-9) > LIGHT_DRAWING else WHITE
    side = max(width, height)
    square = Image.new("RGBA", (side, side), (*colour, 255))
    square.alpha_composite(rgba, dest=((side - width) // 2, (side - height) // 2))
    flat = square.convert("RGB")
    return Drawing(flat.reduce(factor) if factor > 1 else flat, colour)


@dataclass(frozen=True)
class Fingerprint:
    ink_F: np.ndarray  # |pixel - background| of the inked box, padded square, shrunk; float32
    aspect: float  # width / height of the inked box

    @property
    def ink(self) -> float:
        return float(self.ink_F.mean())


def fingerprint(drawing: Drawing) -> Fingerprint:
    """The drawing's fingerprint: its ink (difference from the background) cropped to the inked box, padded
    square with no ink, box-shrunk to 16x16 RGB."""
    ink_HWC = np.abs(np.asarray(drawing.image, dtype=np.int16) - np.array(drawing.background, dtype=np.int16))
    rows, cols = np.nonzero(ink_HWC.max(axis=-1) > _INK_LEVEL)
    if len(rows):
        ink_HWC = ink_HWC[rows.min(): rows.max() + 1, cols.min(): cols.max() + 1]
    height, width = ink_HWC.shape[:2]
    side = max(height, width)
    square_HWC = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square_HWC[top: top + height, left: left + width] = ink_HWC
    small = Image.fromarray(square_HWC, mode="RGB").resize((FINGERPRINT_SIDE, FINGERPRINT_SIDE), Image.Resampling.BOX)
    return Fingerprint(np.asarray(small, dtype=np.float32).reshape(-1), width / height)


class NearDuplicateIndex:
    """Reference drawings (each also mirrored) that ``matches`` compares a drawing against."""

    def __init__(self, drawings: list[Drawing]) -> None:
        views = [view for d in drawings for view in (d, Drawing(ImageOps.mirror(d.image), d.background))]
        prints = [p for p in map(fingerprint, views) if p.ink >= MIN_INK]
        self._ink_RF = np.stack([p.ink_F for p in prints]) if prints else np.zeros((0, 3 * FINGERPRINT_SIDE ** 2))
        self._log_aspect_R = np.log([p.aspect for p in prints]) if prints else np.zeros(0)
        self._sq_norm_R = (self._ink_RF ** 2).sum(axis=1)

    def matches(self, drawing: Drawing) -> bool:
        """Whether ``drawing`` is a near-duplicate of a reference drawing (mirrored or not)."""
        probe = fingerprint(drawing)
        if probe.ink < MIN_INK or not len(self._ink_RF):
            return False
        # Squared distances by the expansion |a|^2 + |b|^2 - 2ab: one matrix-vector product per probe.
        sq_dist_R = np.maximum(self._sq_norm_R + (probe.ink_F ** 2).sum() - 2 * self._ink_RF @ probe.ink_F, 0.0)
        rms_R = np.sqrt(sq_dist_R / probe.ink_F.size)
        mean_ink_R = (self._ink_RF.mean(axis=1) + probe.ink) / 2
        close_R = rms_R <= MAX_RELATIVE_DISTANCE * mean_ink_R
        same_shape_R = np.abs(self._log_aspect_R - np.log(max(probe.aspect, 1e-6))) <= MAX_LOG_ASPECT
        return bool((close_R & same_shape_R).any())
