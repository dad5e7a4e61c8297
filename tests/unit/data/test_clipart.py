"""Clip-art data: transparency onto white, the near-duplicate check across packages, the Tux Paint eval reader and
the Open Clip Art training reader (on small trees laid out like the Debian packages)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from fixtures.drawings import drawing
from PIL import Image

from ito_core.data import clipart, openclipart, tuxpaint
from ito_core.data.clipart import BLACK, WHITE, BlankImageError, Drawing, NearDuplicateIndex, open_drawing
from ito_core.data.openclipart import captions_for, openclipart_files, openclipart_samples, title_words
from ito_core.data.tuxpaint import (
    TUXPAINT_CLASSNAMES,
    class_label,
    stamp_drawings,
    tuxpaint_samples,
    tuxpaint_stamps,
)


def flat(image: Image.Image, background: tuple[int, int, int] = WHITE) -> Drawing:
    """``image`` flattened onto ``background`` (not padded: the fingerprint must not care)."""
    canvas = Image.new("RGBA", image.size, (*background, 255))
    canvas.alpha_composite(image)
    return Drawing(canvas.convert("RGB"), background)


def test_transparency_is_flattened_square_and_pixels_are_capped(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    drawing("house").save(tmp_path / "house.png")
    house = open_drawing(tmp_path / "house.png")
    assert house.background == WHITE and house.image.mode == "RGB"
    assert house.image.size == (120, 120)  # padded square: prep's centre crop keeps it all
    assert house.image.getpixel((0, 0)) == house.image.getpixel((60, 2)) == WHITE
    drawing("ball", colour="white").save(tmp_path / "white.png")
    white = open_drawing(tmp_path / "white.png")
    assert white.background == BLACK and white.image.getpixel((60, 60)) == WHITE  # visible on black
    drawing("house", size=(1200, 800)).save(tmp_path / "large.png")
    assert open_drawing(tmp_path / "large.png").image.size == (400, 400)  # box-shrunk by 3 to <= MAX_SIDE
    Image.new("RGBA", (30, 30), (255, 0, 0, 0)).save(tmp_path / "blank.png")
    with pytest.raises(BlankImageError, match="every pixel is transparent"):
        open_drawing(tmp_path / "blank.png")
    monkeypatch.setattr(clipart, "MAX_PIXELS", 100)
    with pytest.raises(ValueError, match="pixel limit"):
        open_drawing(tmp_path / "house.png")


def test_a_rescaled_padded_or_mirrored_copy_is_a_near_duplicate(tmp_path: Path) -> None:
    index = NearDuplicateIndex([flat(drawing("house")), flat(drawing("flag"))])
    assert index.matches(flat(drawing("house", size=(300, 200))))  # drawn at another size
    drawing("house", size=(300, 200)).save(tmp_path / "house.png")
    assert index.matches(open_drawing(tmp_path / "house.png"))  # padded square: the ink is compared
    assert index.matches(flat(drawing("flag", size=(60, 40)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)))


def test_other_drawings_colours_and_faint_images_are_not() -> None:
    index = NearDuplicateIndex([flat(drawing("house")), flat(drawing("flag"))])
    assert not index.matches(flat(drawing("ball")))
    assert not index.matches(flat(drawing("house", colour="blue")))
    assert not index.matches(flat(Image.new("RGBA", (50, 50))))  # no ink to compare
    assert not NearDuplicateIndex([]).matches(flat(drawing("house")))


def test_ink_is_measured_from_the_background_so_light_drawings_on_black_do_not_all_match() -> None:
    index = NearDuplicateIndex([flat(drawing("house", colour="white"), BLACK)])
    assert index.matches(flat(drawing("house", colour="white", size=(240, 160)), BLACK))
    assert not index.matches(flat(drawing("flag", colour="white"), BLACK))
    assert not index.matches(flat(drawing("ball", colour="white"), BLACK))


REAL_TUXPAINT = tuxpaint.TUXPAINT_DIR.is_dir()


def write_stamp(root: Path, rel: str, image: Image.Image, description: str | None) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    if description is not None:
        path.with_suffix(".txt").write_text(f"{description}\nfr.utf8=Une traduction.\n", encoding="utf-8")


@pytest.fixture
def stamps_root(tmp_path: Path) -> Path:
    root = tmp_path / "stamps"
    write_stamp(root, "animals/birds/cartoon/duck.png", drawing("ball", colour="yellow"), "A duck.")
    write_stamp(root, "town/houses/home.png", drawing("house"), "A red house.")
    write_stamp(root, "town/houses/home_mirror.png", drawing("house").transpose(0), None)
    write_stamp(root, "symbols/alphabets/a.png", drawing("flag"), "The letter A.")
    write_stamp(root, "food/nothing.png", drawing("ball"), None)
    (root / "food/broken.png").write_bytes(b"not a png")
    (root / "food/broken.txt").write_text("A broken stamp.\n")
    return root


def test_stamps_have_their_first_description_line_and_a_class(stamps_root: Path) -> None:
    skipped: Counter[str] = Counter()
    stamps = tuxpaint_stamps(stamps_root, skipped=skipped)
    assert [(s.path.name, s.description) for s in stamps] == [
        ("duck.png", "A duck."), ("broken.png", "A broken stamp."), ("a.png", "The letter A."),
        ("home.png", "A red house.")]
    assert [s.label for s in stamps] == [TUXPAINT_CLASSNAMES.index("bird"), -1, -1, TUXPAINT_CLASSNAMES.index("house")]
    assert skipped == {"mirrored_copy": 1, "no_description": 1}
    samples = list(tuxpaint_samples(stamps))
    assert samples[0].captions == ["A duck."] and samples[0].image.size == (120, 120)  # padded square, on white
    with pytest.raises(OSError, match="broken.png"):
        samples[1].image.convert("RGB")  # prep skips and counts it as a bad image


def test_class_folders_include_subfolders_only_at_a_folder_boundary() -> None:
    assert class_label("animals/birds/cartoon") == class_label("animals/birds") == TUXPAINT_CLASSNAMES.index("bird")
    assert class_label("animals/birdsong") == -1 and class_label("symbols/money/00_symbols") == -1
    assert class_label("symbols/money/euro/coins") == TUXPAINT_CLASSNAMES.index("coin")


def test_missing_packages_name_the_apt_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install tuxpaint-stamps-default"):
        tuxpaint_stamps(tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="apt-get install openclipart-png"):
        openclipart_files(tmp_path / "none")


@pytest.mark.parametrize(("stem", "title"), [
    ("canguro_architetto_franc_01", ["canguro"]),
    ("medicina_dottore_archite_01", ["medicina", "dottore"]),
    ("saturn_dan_gerhards_01", ["saturn"]),
    ("baseball_cap_bw_ganson", ["baseball", "cap", "bw"]),
    ("people_juliane_krug_01a", ["people"]),
    ("star_61pt08step", ["star", "pt", "step"]),
    ("banana", ["banana"]),
    ("ganson", ["ganson"]),  # never an empty title
])
def test_titles_lose_counter_author_and_digits(stem: str, title: list[str]) -> None:
    assert title_words(stem) == title


def test_captions_name_title_and_categories_and_are_deterministic() -> None:
    captions = captions_for(Path("animals/birds/penguin/tux_benji_park_01.png"), index=3)
    assert len(set(captions)) == openclipart.CAPTIONS_PER_SAMPLE
    assert all("tux" in c for c in captions) and not any("benji" in c for c in captions)
    assert captions == captions_for(Path("animals/birds/penguin/tux_benji_park_01.png"), index=3)
    # A name with no title word falls back to its folder.
    assert all("flowchart" in c for c in captions_for(Path("shapes/flowchart/fc26.png"), index=0))


def test_near_duplicates_of_eval_stamps_leave_training_and_are_counted(tmp_path: Path, stamps_root: Path) -> None:
    root = tmp_path / "png"
    write_stamp(root, "buildings/homes/house_jon_phillips_01.png", drawing("house", size=(240, 160)), None)
    write_stamp(root, "plants/tree.png", drawing("ball", colour="green"), None)
    (root / "plants/corrupt.png").write_bytes(b"\x89PNG broken")
    write_stamp(root, "special/gradient.png", Image.new("RGBA", (30, 30), (0, 0, 0, 0)), None)  # nothing drawn
    held_out = NearDuplicateIndex(stamp_drawings(tuxpaint_stamps(stamps_root)))
    counts: Counter[str] = Counter()
    samples = list(openclipart_samples(openclipart_files(root), root=root, held_out=held_out, counts=counts))
    assert counts == {"near_duplicate_of_eval": 1, "blank_image": 1}
    assert [s.key for s in samples] == ["openclipart-00001", "openclipart-00002"]  # the house is gone
    assert all("tree" in caption for caption in samples[1].captions)
    with pytest.raises(OSError):
        samples[0].image.convert("RGB")  # corrupt: counted as a bad image by prep


@pytest.mark.skipif(not REAL_TUXPAINT, reason="Debian package tuxpaint-stamps-default not installed")
def test_the_real_package_reads_with_every_class_populated() -> None:
    skipped: Counter[str] = Counter()
    stamps = tuxpaint_stamps(skipped=skipped)
    labels = Counter(s.label for s in stamps)
    assert len(stamps) > 700 and skipped["mirrored_copy"] > 0
    assert all(labels[c] >= 4 for c in range(len(TUXPAINT_CLASSNAMES))), labels
