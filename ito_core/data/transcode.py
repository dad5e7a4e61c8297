"""One raw input image -> the JPEG a training shard stores, or the reason it is skipped.

Fast where it counts at CC3M/CC12M scale (photos of 500-1500 px stored at ~256 px):

- JPEG inputs decode at reduced scale (``Image.draft``: libjpeg's DCT scaling by 1/2, 1/4, 1/8,
  never below the target size), so most of the pixels are never produced;
- a square centre crop is resampled straight from the source region (the cut-off sides are never
  resized), with area averaging when shrinking (OpenCV's INTER_AREA, as img2dataset) and bicubic
  when enlarging;
- an input that is already a JPEG of the target geometry is copied byte for byte (decoded once
  to check it, never re-encoded).

Checks, each a skip reason: ``corrupt_image`` (not an image, or broken data), ``truncated_image``,
``decompression_bomb`` (more than ``max_pixels`` pixels, judged from the header before decoding),
``too_small`` (shorter side < ``min_size``), ``bad_aspect`` (long / short side > ``max_aspect``).

Only Pillow and the standard library: prep worker processes import this and nothing heavier.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

RESIZE_MODES = ("center_crop", "shorter_side")


@dataclass(frozen=True)
class TranscodeOptions:
    image_size: int  # center_crop: the square's side; shorter_side: the shorter side (downscale only)
    resize_mode: str = "center_crop"
    jpeg_quality: int = 95
    min_size: int = 0  # 0 = no limit
    max_aspect: float = 0.0  # 0 = no limit
    max_pixels: int = 89478485  # PIL's own default limit

    def __post_init__(self) -> None:
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"data.resize_mode={self.resize_mode!r}: choose one of {list(RESIZE_MODES)}")


def transcode(data: bytes, opts: TranscodeOptions) -> tuple[str, bytes]:
    """("", JPEG bytes) for a good image, (skip reason, b"") for a bad one. Never raises for bad input."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = opts.max_pixels  # PIL warns above it and raises above twice it: both are bombs
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return "decompression_bomb", b""
    except Exception:  # UnidentifiedImageError, SyntaxError, struct.error, ...: not an image we can read
        return "corrupt_image", b""
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = image.size
    if min(width, height) < max(opts.min_size, 1):
        return "too_small", b""
    if opts.max_aspect and max(width, height) / min(width, height) > opts.max_aspect:
        return "bad_aspect", b""
    scaled = _scaled_size(width, height, opts)
    square = opts.resize_mode == "center_crop"
    as_is = image.format == "JPEG" and image.mode in ("RGB", "L") and scaled == (width, height)
    if image.format == "JPEG":
        image.draft("RGB", scaled)  # decode straight to >= the scaled size
    try:
        image.load()
    except OSError as err:
        return ("truncated_image" if "truncated" in str(err) else "corrupt_image"), b""
    except Exception:  # decoders raise ValueError/SyntaxError/... on broken streams
        return "corrupt_image", b""
    if as_is and (not square or width == height):
        return "", data
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")  # before resizing: PIL resizes palette images with nearest only
    # Area averaging to shrink (OpenCV's INTER_AREA, as img2dataset), bicubic to enlarge.
    resample = Image.Resampling.BOX if min(image.size) > opts.image_size else Image.Resampling.BICUBIC
    if square:  # crop and scale in one pass: the discarded sides are never resampled
        short = min(image.size)
        left, top = (image.width - short) / 2, (image.height - short) / 2
        box = (left, top, left + short, top + short)
        image = image.resize((opts.image_size, opts.image_size), resample, box=box)
    elif image.size != scaled:
        image = image.resize(scaled, resample)
    buffer = io.BytesIO()
    (image if image.mode == "RGB" else image.convert("RGB")).save(buffer, format="JPEG", quality=opts.jpeg_quality)
    return "", buffer.getvalue()


def _scaled_size(width: int, height: int, opts: TranscodeOptions) -> tuple[int, int]:
    """The size after scaling the shorter side (before any crop)."""
    size, short = opts.image_size, min(width, height)
    if opts.resize_mode == "shorter_side" and short <= size:
        return width, height  # never upscale: the augmentation's random crop rescales anyway
    scale = size / short
    return max(size, round(width * scale)), max(size, round(height * scale))
