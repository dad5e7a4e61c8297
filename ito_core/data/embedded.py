"""Two real image-caption data sets that need no download (DESIGN "Embedded defaults").

- Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (70 000 real 28x28 photos,
  10 classes), captioned from varied templates.
- Procedural shapes: 1-2 coloured shapes drawn with PIL, captioned compositionally
  ("a large red circle at the top left and a small blue square at the bottom right"). Six colour x kind pairs
  (``HELD_OUT_PAIRS``) are never drawn in the train and eval splits; the ``heldout`` split draws only those,
  one shape per image, so zero-shot on it measures composition of a colour and a kind seen apart, not recall.

Both are deterministic: the same arguments give the same samples, byte for byte.
"""

from __future__ import annotations

import gzip
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass
class Sample:
    key: str  # unique within a data set; webdataset keys must not contain "." or "/"
    image: Image.Image  # RGB
    captions: list[str]
    label: int = -1  # class index for zero-shot / linear probe; -1 = none


class UnreadableImage:
    """Stands in for an image that could not be read or decoded: ``write_shards`` converts every image, so the
    sample is skipped there and counted as ``bad_image``, like any corrupt image."""

    def __init__(self, where: str, error: BaseException | str) -> None:
        self.where, self.error = where, error

    def convert(self, mode: str) -> Image.Image:
        raise OSError(f"{self.where}: {self.error!r}")


# --------------------------------------------------------------------------- Fashion-MNIST

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]  # fmt: skip
# "{}" takes the class name with its article ("an ankle boot").
FASHION_MNIST_TEMPLATES = [
    "a photo of {}",
    "a grayscale product photo of {}",
    "a small picture of {} on a black background",
    "a low resolution photo of {}",
    "a black and white image of {}",
    "a catalogue photo of {}",
    "a centered photo of {}",
    "a blurry photo of {}",
    "an image showing {}",
    "a close-up photo of {}",
    "a pixelated picture of {}",
    "a studio shot of {}",
]
FASHION_MNIST_CAPTIONS_PER_SAMPLE = 4
_FASHION_MNIST_FILES = {"train": "train", "test": "t10k"}  # split -> file name prefix


def fashion_mnist_samples(split: str, *, limit: int = 0) -> Iterator[Sample]:
    """Fashion-MNIST samples of ``split`` ("train" or "test"), the first ``limit`` if > 0.

    Checks the split and reads the files now (errors surface at the call), then yields lazily.
    """
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(f"fashion-mnist split={split!r}; choose one of {sorted(_FASHION_MNIST_FILES)}")
    prefix = FASHION_MNIST_DIR / _FASHION_MNIST_FILES[split]
    images_NHW = _read_idx(Path(f"{prefix}-images-idx3-ubyte.gz"), magic=2051)
    labels_N = _read_idx(Path(f"{prefix}-labels-idx1-ubyte.gz"), magic=2049)
    assert len(images_NHW) == len(labels_N), (images_NHW.shape, labels_N.shape)
    count = len(labels_N) if limit <= 0 else min(limit, len(labels_N))
    return _fashion_mnist_iter(split, images_NHW[:count], labels_N[:count])


def fashion_mnist_size(split: str) -> int:
    """How many samples the split holds, from its label file's IDX header (without reading the images)."""
    path = Path(f"{FASHION_MNIST_DIR / _FASHION_MNIST_FILES[split]}-labels-idx1-ubyte.gz")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: Fashion-MNIST comes from Debian; run `apt-get install "
                                "dataset-fashion-mnist`")
    with gzip.open(path, "rb") as f:
        return int(np.frombuffer(f.read(8), dtype=">u4")[1])


def _fashion_mnist_iter(split: str, images_NHW: np.ndarray, labels_N: np.ndarray) -> Iterator[Sample]:
    for i, (image_HW, label) in enumerate(zip(images_NHW, labels_N.tolist(), strict=True)):
        noun = _with_article(FASHION_MNIST_CLASSES[label])
        # Seeded per index, so sample i's captions do not depend on ``limit``.
        templates = random.Random(f"fashion-mnist/{split}/{i}").sample(
            FASHION_MNIST_TEMPLATES, FASHION_MNIST_CAPTIONS_PER_SAMPLE
        )
        yield Sample(
            key=f"fmnist-{split}-{i:05d}",
            image=Image.fromarray(image_HW, mode="L").convert("RGB"),
            captions=[t.format(noun) for t in templates],
            label=label,
        )


def _read_idx(path: Path, *, magic: int) -> np.ndarray:
    """Read a gzip IDX file (big-endian header: magic, then one uint32 per dimension)."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: Fashion-MNIST comes from Debian; run `apt-get install dataset-fashion-mnist`"
        )
    with gzip.open(path, "rb") as f:
        raw = f.read()
    header = np.frombuffer(raw, dtype=">u4", count=1)
    if int(header[0]) != magic:
        raise ValueError(f"{path}: IDX magic {int(header[0])}, expected {magic} (corrupt file?)")
    ndim = magic & 0xFF
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims.astype(int))


def _with_article(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


# --------------------------------------------------------------------------- procedural shapes

SHAPE_KINDS = ["circle", "square", "triangle", "diamond", "cross", "star"]
SHAPE_COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (235, 220, 50),
    "orange": (245, 140, 30), "purple": (150, 60, 200), "white": (240, 240, 240), "cyan": (40, 210, 220),
}  # fmt: skip
SHAPE_SIZES = {"large": 0.40, "small": 0.22}  # extent as a fraction of the image side
SHAPE_POSITIONS = {
    "top left": (0.27, 0.27), "top right": (0.73, 0.27), "bottom left": (0.27, 0.73),
    "bottom right": (0.73, 0.73), "center": (0.5, 0.5),
}  # fmt: skip
_CORNERS = [p for p in SHAPE_POSITIONS if p != "center"]  # two-shape images avoid overlap
# Colour x kind pairs left out of the train and eval splits: one per kind, each colour at most once, so every
# colour and every kind is still seen in training, only never together in these pairs.
HELD_OUT_PAIRS = (("red", "star"), ("green", "circle"), ("blue", "triangle"), ("yellow", "cross"),
                  ("orange", "square"), ("purple", "diamond"))
SEEN_PAIRS = tuple((c, k) for c in SHAPE_COLOURS for k in SHAPE_KINDS if (c, k) not in HELD_OUT_PAIRS)
# Zero-shot classes of the heldout split: every colour x kind pair, so naming the colour or the kind alone is
# not enough (colour alone leaves 6 candidates, kind alone 8).
SHAPE_PAIR_CLASSES = [f"{colour} {kind}" for colour in SHAPE_COLOURS for kind in SHAPE_KINDS]
# Disjoint seed streams make the splits differ; train and eval also differ in background level (even / odd),
# heldout in its colour x kind pairs.
_SHAPES_SPLITS = {"train": 0, "eval": 1, "heldout": 2}
_SUPERSAMPLE = 2  # draw at 2x, then box-downsample: cheap anti-aliasing


@dataclass(frozen=True)
class _Shape:
    kind: str
    colour: str
    size: str
    position: str

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.kind}"


def shapes_samples(split: str, *, num_samples: int, image_size: int, seed: int = 0) -> Iterator[Sample]:
    """``num_samples`` procedural shape images of ``split`` ("train", "eval" or "heldout"), generated lazily.

    train / eval: 1-2 shapes of ``SEEN_PAIRS``; label = index in ``SHAPE_KINDS`` of the first shape (the one every
    caption names first). heldout: one shape of ``HELD_OUT_PAIRS``; label = its index in ``SHAPE_PAIR_CLASSES``.
    """
    if split not in _SHAPES_SPLITS:
        raise ValueError(f"shapes split={split!r}; choose one of {sorted(_SHAPES_SPLITS)}")
    if image_size < 8 or num_samples < 0:
        raise ValueError(f"shapes image_size={image_size}, num_samples={num_samples}: need >= 8 and >= 0")
    return _shapes_iter(split, num_samples=num_samples, image_size=image_size, seed=seed)


def _shapes_iter(split: str, *, num_samples: int, image_size: int, seed: int) -> Iterator[Sample]:
    split_id = _SHAPES_SPLITS[split]
    for i in range(num_samples):
        # One generator per index: sample i is the same whatever num_samples is.
        rng = np.random.default_rng([seed, split_id, i])
        heldout = split == "heldout"
        shapes = _draw_layout(rng, HELD_OUT_PAIRS if heldout else SEEN_PAIRS, max_shapes=1 if heldout else 2)
        first = shapes[0]
        label = SHAPE_PAIR_CLASSES.index(f"{first.colour} {first.kind}") if heldout else SHAPE_KINDS.index(first.kind)
        yield Sample(
            key=f"shapes-{split}-{seed}-{i:06d}",
            image=_render(shapes, rng, image_size=image_size, split_id=split_id),
            captions=_shape_captions(shapes),
            label=label,
        )


def _draw_layout(rng: np.random.Generator, pairs: tuple[tuple[str, str], ...], *, max_shapes: int) -> list[_Shape]:
    num_shapes = int(rng.integers(1, max_shapes + 1))
    positions = list(SHAPE_POSITIONS) if num_shapes == 1 else _CORNERS
    picked = rng.choice(len(positions), size=num_shapes, replace=False)
    shapes = []
    for p in picked:
        colour, kind = pairs[int(rng.integers(len(pairs)))]
        size = list(SHAPE_SIZES)[int(rng.integers(len(SHAPE_SIZES)))]
        shapes.append(_Shape(kind=kind, colour=colour, size=size, position=positions[int(p)]))
    return shapes


def _render(shapes: list[_Shape], rng: np.random.Generator, *, image_size: int, split_id: int) -> Image.Image:
    side = image_size * _SUPERSAMPLE
    # Dark backgrounds so every colour (white included) stays visible; train levels are even, eval odd.
    level = 2 * int(rng.integers(0, 30)) + split_id % 2
    image = Image.new("RGB", (side, side), (level, level, level))
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        cx, cy = SHAPE_POSITIONS[shape.position]
        jitter_2 = rng.uniform(-0.03, 0.03, size=2)  # small offsets so positions are not pixel-identical
        half = SHAPE_SIZES[shape.size] * side / 2
        centre = ((cx + jitter_2[0]) * side, (cy + jitter_2[1]) * side)
        _draw_shape(draw, shape.kind, centre, half, SHAPE_COLOURS[shape.colour])
    image = image.reduce(_SUPERSAMPLE)
    if rng.random() < 0.5:  # lightly noisy background (and shapes), half of the time
        noise_HWC = rng.normal(0.0, 6.0, size=(image_size, image_size, 3))
        pixels_HWC = np.asarray(image, dtype=np.float32) + noise_HWC
        image = Image.fromarray(np.clip(pixels_HWC, 0, 255).astype(np.uint8), mode="RGB")
    return image


def _draw_shape(
    draw: ImageDraw.ImageDraw, kind: str, centre: tuple[float, float], half: float, fill: tuple[int, int, int]
) -> None:
    cx, cy = centre
    if kind == "circle":
        draw.ellipse((cx - half, cy - half, cx + half, cy + half), fill=fill)
    elif kind == "square":
        draw.rectangle((cx - half * 0.85, cy - half * 0.85, cx + half * 0.85, cy + half * 0.85), fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, cy - half), (cx + half, cy + half * 0.8), (cx - half, cy + half * 0.8)], fill=fill)
    elif kind == "diamond":
        width = half * 0.75
        draw.polygon([(cx, cy - half), (cx + width, cy), (cx, cy + half), (cx - width, cy)], fill=fill)
    elif kind == "cross":
        arm = half * 0.33
        draw.rectangle((cx - half, cy - arm, cx + half, cy + arm), fill=fill)
        draw.rectangle((cx - arm, cy - half, cx + arm, cy + half), fill=fill)
    elif kind == "star":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, half, half * 0.45)
        points = [(cx + r * np.cos(a), cy - r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]
        draw.polygon(points, fill=fill)
    else:
        raise AssertionError(f"unknown shape kind {kind!r}")


def _shape_captions(shapes: list[_Shape]) -> list[str]:
    """Three paraphrases; every one names the first shape first, so label = first shape's kind."""
    at = [f"{s.phrase()} at the {s.position}" for s in shapes]
    inside = [f"{s.phrase()} in the {s.position}" for s in shapes]
    if len(shapes) == 1:
        return [at[0], f"there is {at[0]}", f"a picture showing {inside[0]}"]
    return [
        f"{at[0]} and {at[1]}",
        f"{at[0]}, with {at[1]}",
        f"a picture showing {inside[0]} and {inside[1]}",
    ]


# --------------------------------------------------------------------------- eval helpers

_EVAL_CLASSES = {"fashion_mnist": FASHION_MNIST_CLASSES, "shapes": SHAPE_KINDS, "shapes_heldout": SHAPE_PAIR_CLASSES}


def embedded_eval_classes(name: str) -> list[str]:
    """Class names (label order) of an embedded data set, for zero-shot and linear-probe eval."""
    if name not in _EVAL_CLASSES:
        raise ValueError(f"embedded data set {name!r}; choose one of {sorted(_EVAL_CLASSES)}")
    return list(_EVAL_CLASSES[name])
