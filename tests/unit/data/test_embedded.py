from __future__ import annotations

import hashlib
import itertools

import pytest

from ito_core.data import embedded
from ito_core.data.embedded import (
    FASHION_MNIST_CLASSES,
    SHAPE_KINDS,
    embedded_eval_classes,
    fashion_mnist_samples,
    shapes_samples,
)

FASHION_MNIST_PRESENT = (embedded.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists()
needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_PRESENT, reason="Debian package dataset-fashion-mnist not installed"
)


@needs_fashion_mnist
def test_fashion_mnist_reads_real_images_with_varied_captions() -> None:
    samples = list(fashion_mnist_samples("test", limit=50))
    assert len(samples) == 50
    assert len({s.key for s in samples}) == 50
    for s in samples:
        assert s.image.mode == "RGB" and s.image.size == (28, 28)
        assert 0 <= s.label < 10
        assert len(set(s.captions)) == 4
        assert all(FASHION_MNIST_CLASSES[s.label] in c for c in s.captions)
    assert len({c.replace(FASHION_MNIST_CLASSES[s.label], "") for s in samples for c in s.captions}) >= 10
    assert len({s.label for s in samples}) == 10
    assert samples[0].image.getextrema() != ((0, 0), (0, 0), (0, 0))  # a real picture, not a blank


@needs_fashion_mnist
def test_fashion_mnist_is_deterministic_and_full_size() -> None:
    first = next(fashion_mnist_samples("train"))
    again = next(fashion_mnist_samples("train", limit=1))
    assert first.captions == again.captions and first.image.tobytes() == again.image.tobytes()
    assert sum(1 for _ in fashion_mnist_samples("test")) == 10_000


def test_fashion_mnist_missing_files_name_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(embedded, "FASHION_MNIST_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_samples("train")


def test_unknown_split_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        fashion_mnist_samples("val")
    with pytest.raises(ValueError, match="choose one of"):
        shapes_samples("test", num_samples=1, image_size=32)


def test_shapes_are_deterministic_and_independent_of_count() -> None:
    a = list(shapes_samples("train", num_samples=20, image_size=32, seed=1))
    b = list(shapes_samples("train", num_samples=30, image_size=32, seed=1))[:20]
    c = list(shapes_samples("train", num_samples=20, image_size=32, seed=2))
    assert [(s.key, s.captions, s.label, s.image.tobytes()) for s in a] == [
        (s.key, s.captions, s.label, s.image.tobytes()) for s in b
    ]
    assert [s.image.tobytes() for s in a] != [s.image.tobytes() for s in c]


def test_shapes_captions_are_compositional_and_label_is_first_kind() -> None:
    for s in shapes_samples("train", num_samples=200, image_size=32):
        assert s.image.mode == "RGB" and s.image.size == (32, 32)
        assert len(set(s.captions)) == 3
        for caption in s.captions:
            words = caption.replace(",", "").split()
            assert s.label == SHAPE_KINDS.index(next(w for w in words if w in SHAPE_KINDS))
            num_shapes = words.count("large") + words.count("small")
            joined = " and " in caption or " with " in caption
            assert num_shapes == sum(w in SHAPE_KINDS for w in words) == 1 + joined


def test_shapes_train_and_eval_images_never_coincide() -> None:
    def digests(split: str) -> set[str]:
        samples = shapes_samples(split, num_samples=1000, image_size=16)
        return {hashlib.sha256(s.image.tobytes()).hexdigest() for s in samples}

    assert not digests("train") & digests("eval")


def test_shapes_cover_every_kind_colour_size_and_position() -> None:
    samples = shapes_samples("eval", num_samples=300, image_size=16)
    captions = " ".join(itertools.chain.from_iterable(s.captions for s in samples))
    for word in [*SHAPE_KINDS, *embedded.SHAPE_COLOURS, *embedded.SHAPE_SIZES, *embedded.SHAPE_POSITIONS]:
        assert word in captions


def test_eval_classes() -> None:
    assert embedded_eval_classes("fashion_mnist") == FASHION_MNIST_CLASSES
    assert embedded_eval_classes("shapes") == SHAPE_KINDS
    with pytest.raises(ValueError, match="choose one of"):
        embedded_eval_classes("imagenet")


def _pairs(caption: str) -> set[tuple[str, str]]:
    """(colour, kind) of every shape a caption names."""
    words = caption.replace(",", "").split()
    return {(words[i - 1], w) for i, w in enumerate(words) if w in SHAPE_KINDS}


def test_no_held_out_colour_shape_pair_is_drawn_outside_the_heldout_split() -> None:
    held_out = set(embedded.HELD_OUT_PAIRS)
    for split in ("train", "eval"):
        seen = {p for s in shapes_samples(split, num_samples=400, image_size=8) for c in s.captions for p in _pairs(c)}
        assert not seen & held_out
        assert {c for c, _ in seen} == set(embedded.SHAPE_COLOURS) and {k for _, k in seen} == set(SHAPE_KINDS)


def test_heldout_split_draws_one_held_out_pair_labelled_by_pair_class() -> None:
    samples = list(shapes_samples("heldout", num_samples=120, image_size=16))
    classes = embedded_eval_classes("shapes_heldout")
    assert len(classes) == len(embedded.SHAPE_COLOURS) * len(SHAPE_KINDS)
    for s in samples:
        (pair,) = {p for c in s.captions for p in _pairs(c)}
        assert pair in embedded.HELD_OUT_PAIRS and classes[s.label] == " ".join(pair)
    assert {s.label for s in samples} == {classes.index(" ".join(p)) for p in embedded.HELD_OUT_PAIRS}
    again = list(shapes_samples("heldout", num_samples=5, image_size=16))
    assert [s.image.tobytes() for s in again] == [s.image.tobytes() for s in samples[:5]]
