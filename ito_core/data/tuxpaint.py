"""Held-out eval set: the Tux Paint stamps of the Debian package ``tuxpaint-stamps-default`` (GPL-2).

Each stamp is a drawing (``<name>.png``) in a category folder with a human-written English description, the
first line of ``<name>.txt`` (the other lines are translations). We read the PNG stamps only (SVG is out) and
leave out ``*_mirror.png`` (the same drawing flipped, for Tux Paint's mirror tool) and stamps without a
description; both are counted.

- Retrieval: every stamp against its description.
- Zero-shot: the stamps in ``TUXPAINT_CLASSES``, folders that hold one kind of object, named as a class; the
  rest (letters and digits of many alphabets, currency signs, chess pieces, holiday scenes, single odd stamps)
  get label -1 and are left out of zero-shot only. Letters and signs are glyphs rather than objects, the
  holiday folders mix every kind of object, and a class of one or two stamps measures nothing.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ito_core.data.clipart import BAD_PNG, Drawing, open_drawing
from ito_core.data.embedded import Sample, UnreadableImage

log = logging.getLogger(__name__)

TUXPAINT_DIR = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
# Class name -> the stamp folders it holds (and their subfolders), in label order.
TUXPAINT_CLASSES: dict[str, tuple[str, ...]] = {
    "bird": ("animals/birds",),
    "fish": ("animals/fish",),
    "insect": ("animals/insects",),
    "mammal": ("animals/mammals", "animals/marsupials"),
    "fruit": ("food/fruit",),
    "vegetable": ("food/vegetables",),
    "flower": ("plants/flowers",),
    "tree": ("plants/trees",),
    "hat": ("clothes/hats",),
    "house": ("town/houses",),
    "road sign": ("town/roadsigns",),
    "musical instrument": ("hobbies/music",),
    "tool": ("household/tools",),
    "coin": ("symbols/money/canadian/coins", "symbols/money/euro/coins", "symbols/money/japanese",
             "symbols/money/us/coins"),
    "planet": ("space/planets",),
    "vehicle": ("vehicles",),
}
TUXPAINT_CLASSNAMES = list(TUXPAINT_CLASSES)
_MIRROR_SUFFIX = "_mirror"


@dataclass(frozen=True)
class Stamp:
    path: Path
    description: str
    label: int  # index in TUXPAINT_CLASSNAMES, -1 = in no class


def require_dir(path: Path, package: str) -> Path:
    """``path`` if it is a folder, else ``FileNotFoundError`` naming the Debian package that installs it."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: it comes from Debian; run `apt-get install {package}`")
    return path


def class_label(relative_folder: str) -> int:
    """The class of a stamp in ``relative_folder`` (posix, under the stamps root); -1 when it is in none."""
    for label, folders in enumerate(TUXPAINT_CLASSES.values()):
        if any(relative_folder == f or relative_folder.startswith(f"{f}/") for f in folders):
            return label
    return -1


def _description(text_file: Path) -> str:
    if not text_file.is_file():
        return ""
    lines = text_file.read_text(encoding="utf-8", errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def tuxpaint_stamps(root: Path | None = None, *, skipped: Counter[str] | None = None) -> list[Stamp]:
    """Every PNG stamp with a description under ``root`` (default ``TUXPAINT_DIR``), in path order; ``skipped``
    counts what was left out and why."""
    root = TUXPAINT_DIR if root is None else root
    skipped = Counter() if skipped is None else skipped
    stamps = []
    for png in sorted(require_dir(root, TUXPAINT_PACKAGE).rglob("*.png")):
        if png.stem.endswith(_MIRROR_SUFFIX):
            skipped["mirrored_copy"] += 1
            continue
        description = _description(png.with_suffix(".txt"))
        if not description:
            skipped["no_description"] += 1
            continue
        stamps.append(Stamp(png, description, class_label(png.parent.relative_to(root).as_posix())))
    if not stamps:
        raise FileNotFoundError(f"no described PNG stamps under {root}; reinstall `apt-get install {TUXPAINT_PACKAGE}`")
    return stamps


def stamp_image(stamp: Stamp) -> Image.Image | UnreadableImage:
    """The stamp flattened and padded square (``clipart.open_drawing``); an unreadable or blank one becomes a
    stand-in that prep skips and counts as a bad image."""
    try:
        return open_drawing(stamp.path).image
    except BAD_PNG as err:
        return UnreadableImage(str(stamp.path), err)


def stamp_drawings(stamps: list[Stamp]) -> list[Drawing]:
    """The stamps as drawings, for the near-duplicate check; the unreadable ones (skipped by prep) left out."""
    drawings = []
    for stamp in stamps:
        try:
            drawings.append(open_drawing(stamp.path))
        except BAD_PNG:
            log.warning("tuxpaint: %s is unreadable; the eval set skips it", stamp.path)
    return drawings


def tuxpaint_samples(stamps: list[Stamp]) -> Iterator[Sample]:
    """The eval samples of ``stamps``: the image, its description as the one caption, its class or -1."""
    for i, stamp in enumerate(stamps):
        yield Sample(key=f"tuxpaint-{i:04d}", image=stamp_image(stamp), captions=[stamp.description],
                     label=stamp.label)
