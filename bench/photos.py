"""Realistic JPEG inputs for the data benchmarks, made from the real photos our dependencies ship.

matplotlib's ``grace_hopper.jpg`` (512x600) and scikit-learn's ``china.jpg`` / ``flower.jpg`` (640x427)
are cut into random crops, flipped, colour-shifted and rescaled to 500-1500 px on the longer side
(CC3M/CC12M originals are mostly in that range), with a little sensor-like noise so upscaled crops
keep fine detail, and saved as quality-90 JPEGs. Deterministic for a seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
import sklearn
from PIL import Image

SOURCES = (
    Path(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"),
    Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
    Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
)


def make_photos(count: int, *, seed: int = 0, min_side: int = 500, max_side: int = 1500) -> list[bytes]:
    rng = np.random.default_rng(seed)
    sources = [Image.open(path).convert("RGB") for path in SOURCES]
    photos = []
    for i in range(count):
        source = sources[i % len(sources)]
        width, height = source.size
        crop_w, crop_h = (int(side * rng.uniform(0.5, 1.0)) for side in (width, height))
        left, top = int(rng.integers(0, width - crop_w + 1)), int(rng.integers(0, height - crop_h + 1))
        crop = source.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        longer = int(rng.integers(min_side, max_side + 1))
        scale = longer / max(crop_w, crop_h)
        size = (max(1, round(crop_w * scale)), max(1, round(crop_h * scale)))
        pixels_HWC = np.asarray(crop.resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
        pixels_HWC = pixels_HWC * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 4, pixels_HWC.shape)
        buffer = io.BytesIO()
        Image.fromarray(pixels_HWC.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        photos.append(buffer.getvalue())
    return photos
