"""Training source: the Open Clip Art Library's PNGs from the Debian package ``openclipart-png`` (public domain).

About 8,100 drawings under ``/usr/share/openclipart/png/<category>/<subcategory>/.../<name>.png``. A file name
is the drawing's title and author cut to 24 characters, often with a ``_NN`` counter
(``canguro_architetto_franc_01``: "canguro" by Architetto Francesco Rollandin); some are bare titles
(``banana``) or series names (``star_61pt08step``). Captions are built from the title (the author, counter and
digits removed) and the category path, with varied templates, so the words of the category tree
("birds", "fruit", "flowers") reach the text tower the way alt-text would.

Drawings that are near-duplicates of a held-out eval image (``clipart.NearDuplicateIndex``, built from the
Tux Paint stamps) are left out and counted, so no eval image is trained on.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from ito_core.data.clipart import BAD_PNG, BlankImageError, NearDuplicateIndex, open_drawing
from ito_core.data.embedded import Sample, UnreadableImage
from ito_core.data.tuxpaint import require_dir

OPENCLIPART_DIR = Path("/usr/share/openclipart/png")
OPENCLIPART_PACKAGE = "openclipart-png"
# The most frequent authors in the file names (counted over the package), first token in full: a title's trailing
# words that start one of these names, its last word possibly cut, are the author and are dropped.
AUTHORS = (
    "architetto francesco rollandin", "benji park", "nicu buculei", "jon phillips", "gerald g", "jarno vasamaa",
    "ganson", "linda kim", "juliane krug", "sergio luiz araujo", "luiz araujo", "dan gerhards", "yves guillou",
    "frederic moser", "matt todd", "dave pena", "jean victor balin", "victor balin", "anthony liekens",
    "matthew gates", "mauro olivo", "roman bertle", "patricia fidi", "susan park", "enrique meza c",
    "aj ashton", "yen cheng", "jonadab the unsightly one", "saurabh nanda", "peterm", "mimooh", "zazou",
    "mateya", "gabrielle nowicki", "mitchell johnson", "jesper zedlitz", "andy bur", "nicolas cl",
)
_AUTHOR_WORDS = tuple(tuple(author.split()) for author in AUTHORS)
CAPTION_TEMPLATES = (
    "{title}",
    "a clip art drawing of {title}",
    "{title}, clip art from the {path} collection",
    "an illustration of {title} ({path})",
    "a drawing of {title}, filed under {leaf}",
    "{leaf} clip art: {title}",
)
CAPTIONS_PER_SAMPLE = 3
_COUNTER = re.compile(r"_\d+[a-z]?$")  # the "_01" (or "_01r", "_01a") counter at the end of a name
_WORD = re.compile(r"[a-z]+")


def _is_author(words: list[str]) -> bool:
    """Whether ``words`` (trailing words of a name) start an author's name, the last word possibly cut."""
    for author in _AUTHOR_WORDS:
        if len(words) <= len(author) and words[:-1] == list(author[: len(words) - 1]) \
                and author[len(words) - 1].startswith(words[-1]) and (len(words) > 1 or len(words[-1]) >= 4):
            return True
    return False


def title_words(stem: str) -> list[str]:
    """The title of a file name: lower-case words, the counter, the author and any digits removed."""
    words = _WORD.findall(_COUNTER.sub("", stem).lower())
    for start in range(1, len(words)):  # the longest trailing run that is an author, the title kept non-empty
        if _is_author(words[start:]):
            return words[:start]
    return words


def captions_for(relative: Path, *, index: int) -> list[str]:
    """``CAPTIONS_PER_SAMPLE`` captions of the drawing at ``relative`` (under the package's png folder)."""
    folders = [part.replace("_", " ") for part in relative.parent.parts]
    leaf = folders[-1] if folders else "clip art"
    words = [w for w in title_words(relative.stem) if len(w) > 1]
    title = " ".join(words) if any(len(w) > 2 for w in words) else leaf
    templates = random.Random(f"openclipart/{index}").sample(CAPTION_TEMPLATES, CAPTIONS_PER_SAMPLE)
    path = ", ".join(folders) or "clip art"
    return [t.format(title=title, path=path, leaf=leaf) for t in templates]


def openclipart_files(root: Path | None = None) -> list[Path]:
    """Every PNG under ``root`` (default ``OPENCLIPART_DIR``), in path order; ``FileNotFoundError`` naming the
    package when it is missing."""
    root = OPENCLIPART_DIR if root is None else root
    files = sorted(require_dir(root, OPENCLIPART_PACKAGE).rglob("*.png"))
    if not files:
        raise FileNotFoundError(f"no PNGs under {root}; reinstall `apt-get install {OPENCLIPART_PACKAGE}`")
    return files


def openclipart_samples(files: list[Path], *, root: Path | None = None, held_out: NearDuplicateIndex,
                        counts: Counter[str]) -> Iterator[Sample]:
    """Training samples of ``files`` (under ``root``, default ``OPENCLIPART_DIR``), each drawing flattened and
    padded square (``clipart.open_drawing``); near-duplicates of a ``held_out`` image are dropped, counted in
    ``counts["near_duplicate_of_eval"]``, and so are drawings with no visible pixel (``counts["blank_image"]``)."""
    root = OPENCLIPART_DIR if root is None else root
    for index, path in enumerate(files):
        image: Image.Image | UnreadableImage
        try:
            drawing = open_drawing(path)
        except BlankImageError:
            counts["blank_image"] += 1
            continue
        except BAD_PNG as err:  # prep counts the stand-in as a bad image
            image = UnreadableImage(str(path), err)
        else:
            if held_out.matches(drawing):
                counts["near_duplicate_of_eval"] += 1
                continue
            image = drawing.image
        yield Sample(key=f"openclipart-{index:05d}", image=image, captions=captions_for(path.relative_to(root),
                                                                                          index=index))
