"""User eval sets: each layout reader on a tiny hand-built tree, and every bad input failing clearly."""

from __future__ import annotations

import io
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from ito_core.config import EVAL_LAYOUTS, eval_task_sets, load_config, validate
from ito_core.config.registry import resolve
from ito_core.data import eval_layouts, eval_sets
from ito_core.data.eval_layouts import IMAGENET_NUM_CLASSES
from ito_core.data.eval_sets import check_eval_tasks, read_eval_source
from ito_core.data.shards import write_shards

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def write_image(path: Path, colour: tuple[int, int, int] = (255, 0, 0), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path, format=fmt)
    return path


def image_bytes(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def pixel(sample: eval_sets.Sample) -> tuple[int, ...]:
    return sample.image.convert("RGB").getpixel((0, 0))


@pytest.mark.parametrize("layout", sorted(EVAL_LAYOUTS))
def test_every_configurable_layout_resolves_to_its_reader(layout: str) -> None:
    reader = resolve(EVAL_LAYOUTS, layout)
    assert callable(reader) and reader.__module__ == "ito_core.data.eval_layouts"


@pytest.mark.parametrize(("count", "k", "picked"), [(10, 0, list(range(10))), (10, 20, list(range(10))),
                                                     (10, 5, [0, 2, 4, 6, 8]), (50_000, 2000, None)])
def test_max_samples_keeps_an_even_spread(count: int, k: int, picked: list[int] | None) -> None:
    indices = eval_sets.spread_indices(count, k)
    if picked is not None:
        assert indices == picked
    else:  # ImageNet val: 50 images per class stored class by class -> exactly 2 of every class
        per_class = np.bincount(np.array(indices) // 50, minlength=1000)
        assert len(indices) == 2000 and (per_class == 2).all()


def test_reservoir_is_seeded_uniform_and_keeps_stream_order() -> None:
    picked = eval_layouts._reservoir(range(1000), 50)
    assert picked == eval_layouts._reservoir(range(1000), 50) and picked == sorted(picked)
    assert len(set(picked)) == 50 and max(picked) > 500  # not just the head of the stream


# ---------------------------------------------------------------------------------------------- folder


@pytest.fixture
def pets(tmp_path: Path) -> Path:
    root = tmp_path / "my pets"
    write_image(root / "dog_house" / "b.png", COLOURS[1])
    write_image(root / "cat" / "x.jpg", COLOURS[0], "JPEG")
    write_image(root / "cat" / "nested" / "y.png", COLOURS[2])
    write_image(root / "dog_house" / "a.webp", COLOURS[3], "WEBP")
    (root / "dog_house" / "a.txt").write_text("a red dog house\n\na house for a dog\n")
    (root / "README.md").write_text("not an image, not in a class folder")
    return root


def test_folder_is_read_in_imagefolder_order_with_sidecar_captions(pets: Path) -> None:
    source = read_eval_source("pets", f"folder:{pets}", max_samples=0)
    samples = list(source.samples)
    assert source.classnames == ["cat", "dog house"] and source.captioned
    assert [(s.key, s.label) for s in samples] == [("folder-0000000", 0), ("folder-0000001", 0),
                                                   ("folder-0000002", 1), ("folder-0000003", 1)]
    assert [s.captions for s in samples] == [["a photo of a cat."], ["a photo of a cat."],
                                             ["a red dog house", "a house for a dog"], ["a photo of a dog house."]]
    assert pixel(samples[0]) == COLOURS[2]  # cat/nested/y.png sorts before cat/x.jpg


def test_folder_classnames_file_wins_and_must_match(pets: Path) -> None:
    (pets / "classnames.txt").write_text("house cat\nkennel\n")
    assert read_eval_source("pets", f"folder:{pets}", max_samples=0).classnames == ["house cat", "kennel"]
    (pets / "classnames.txt").write_text("house cat\n")
    with pytest.raises(ValueError, match=r"eval\.datasets\.pets.*1 classes for 2 class folders"):
        read_eval_source("pets", f"folder:{pets}", max_samples=0)


def test_corrupt_and_missing_images_are_skipped_and_counted(pets: Path, tmp_path: Path) -> None:
    (pets / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (pets / "cat" / "truncated.png").write_bytes(write_image(tmp_path / "t.png").read_bytes()[:30])
    source = read_eval_source("pets", f"folder:{pets}", max_samples=0)
    manifest = write_shards(source.samples, tmp_path / "out", image_size=8, samples_per_shard=10, jpeg_quality=90)
    assert manifest["num_samples"] == 4 and manifest["stats"]["skipped"] == {"bad_image": 2}


@pytest.mark.parametrize(("spec", "match"), [
    ("folder:{missing}", r"eval\.datasets\.mine='folder:.*': no files under .*point it at an existing folder"),
    ("imgfolder:/data", r"unknown layout 'imgfolder'.*\['cifar10', 'cifar100', 'folder', 'imagenet', 'karpathy'"),
    ("/data/imagenet", r"unknown layout '/data/imagenet'"),
    ("folder:", r"no path"),
    ("folder:/data?images=/x", r"unknown options \['images'\]; folder takes \[\]"),
    ("folder:{flat}", r"no images in class folders under .*<root>/<class>/<image>"),
])
def test_bad_specs_name_the_key_and_the_fix(spec: str, match: str, tmp_path: Path) -> None:
    write_image(tmp_path / "flat" / "lonely.png")
    spec = spec.format(missing=tmp_path / "nope", flat=tmp_path / "flat")
    with pytest.raises(ValueError, match=match):
        read_eval_source("mine", spec, max_samples=0)


def test_config_checks_specs_and_set_names_before_any_job() -> None:
    cfg = load_config(["+eval.datasets.in1k=imagenet:/data/imagenet/val", "eval.zero_shot=in1k"])
    assert cfg.eval.datasets == {"in1k": "imagenet:/data/imagenet/val"} and cfg.eval.zero_shot == "in1k"
    with pytest.raises(ValueError, match=r"eval\.datasets\.in1k.*layouts: \['folder'"):
        load_config(["+eval.datasets.in1k=imgnet:/data"])
    with pytest.raises(ValueError, match=r"eval\.zero_shot.*'in1k' is neither.*\+eval\.datasets\.in1k=<layout>"):
        load_config(["eval.zero_shot=in1k"])
    with pytest.raises(ValueError, match=r"eval\.datasets\.shapes.*embedded set"):
        load_config(["+eval.datasets.shapes=folder:/data"])
    with pytest.raises(ValueError, match=r"eval\.datasets\.tuxpaint.*embedded set"):
        load_config(["+eval.datasets.tuxpaint=folder:/data"])


@pytest.mark.parametrize(("overrides", "match"), [
    (["eval.zero_shot=[fashion_mnist,in1k]"], r"^config eval\.zero_shot: 'in1k' is neither an embedded set"),
    (["eval.retrieval=[shapes,3]"], r"^config eval\.retrieval: \['shapes', 3\] is not a set name or a list"),
    (["eval.linear_probe=5"], r"^config eval\.linear_probe: 5 is not a set name"),
])
def test_task_keys_take_a_name_or_a_list_and_fail_in_one_line(overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        load_config(overrides)
    assert "\n" not in str(err.value)


def test_task_keys_take_one_name_as_the_readme_writes_it() -> None:
    cfg = load_config(["+eval.datasets.in1k=imagenet:/data/imagenet/val", "eval.zero_shot=in1k"])
    assert eval_task_sets(cfg.eval, "zero_shot") == ["in1k"]
    cfg = load_config(["eval.zero_shot=[tuxpaint,shapes_heldout]", "eval.retrieval="])
    assert eval_task_sets(cfg.eval, "zero_shot") == ["tuxpaint", "shapes_heldout"]
    assert eval_task_sets(cfg.eval, "retrieval") == []


def test_validation_rejects_bad_set_names_before_any_job() -> None:
    cfg = load_config([])
    cfg.eval.datasets = {"my set/1": "folder:/data"}  # Hydra's override grammar cannot even spell this key
    with pytest.raises(ValueError, match=r"eval\.datasets\.my set/1.*letters, digits"):
        validate(cfg)


# ---------------------------------------------------------------------------------------------- imagenet


def test_imagenet_val_gets_openai_class_names_and_a_class_balanced_cap(tmp_path: Path) -> None:
    png = write_image(tmp_path / "one.png").read_bytes()
    for i in range(IMAGENET_NUM_CLASSES):
        folder = tmp_path / "val" / f"n{10_000_000 + i:08d}"
        folder.mkdir(parents=True)
        (folder / "ILSVRC2012_val_0.JPEG").write_bytes(png)  # the extension check ignores case
    source = read_eval_source("in1k", f"imagenet:{tmp_path / 'val'}/", max_samples=4)
    samples = list(source.samples)
    assert len(source.classnames) == 1000 and source.classnames[:2] == ["tench", "goldfish"]
    assert source.classnames[-1] == "toilet paper" and not source.captioned
    assert [s.label for s in samples] == [0, 250, 500, 750]  # one per class spread over all classes
    assert samples[1].captions == [f"a photo of a {source.classnames[250]}."]


def test_imagenet_needs_the_1000_wnid_folders(tmp_path: Path) -> None:
    for wnid in ("n01440764", "n01443537"):
        write_image(tmp_path / "val" / wnid / "a.png")
    with pytest.raises(ValueError, match=r"eval\.datasets\.in1k.*found 2 class folders.*1000.*valprep\.sh"):
        read_eval_source("in1k", f"imagenet:{tmp_path / 'val'}", max_samples=0)


# ---------------------------------------------------------------------------------------------- cifar


def write_cifar(root: Path, layout: str, labels: list[int], names: list[bytes]) -> np.ndarray:
    folder, test_file, meta_file, label_key, names_key = eval_layouts._CIFAR[layout]
    data_NK = np.zeros((len(labels), 3 * 32 * 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        data_NK[i, :1024] = 40 * label  # red plane, channel-major as in the real files
        data_NK[i, 2048:] = 200  # blue plane
    (root / folder).mkdir(parents=True)
    with open(root / folder / test_file, "wb") as f:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", label_key.encode(): labels, b"data": data_NK,
                     b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}, f)
    with open(root / folder / meta_file, "wb") as f:
        pickle.dump({names_key.encode(): names, b"num_cases_per_batch": len(labels)}, f)
    return data_NK


@pytest.mark.parametrize("layout", ["cifar10", "cifar100"])
def test_cifar_test_split_through_the_restricted_unpickler(tmp_path: Path, layout: str) -> None:
    write_cifar(tmp_path, layout, [2, 0, 1, 2], [b"airplane", b"aquarium_fish", b"bird"])
    folder = eval_layouts._CIFAR[layout][0]
    for root in (tmp_path, tmp_path / folder):  # torchvision's root, or the batches folder itself
        source = read_eval_source("c", f"{layout}:{root}", max_samples=0)
        samples = list(source.samples)
        assert source.classnames == ["airplane", "aquarium fish", "bird"] and not source.captioned
        assert [s.label for s in samples] == [2, 0, 1, 2] and samples[0].captions == ["a photo of a bird."]
        assert samples[0].image.size == (32, 32) and pixel(samples[0]) == (80, 0, 200)


def test_cifar_refuses_a_pickle_that_would_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple:
            return os.system, (f"touch {marker}",)

    write_cifar(tmp_path, "cifar10", [0], [b"a"])
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"eval\.datasets\.c.*refusing to load the global posix\.system"):
        read_eval_source("c", f"cifar10:{tmp_path}", max_samples=0)
    assert not marker.exists()


def test_cifar_missing_or_wrong_files_fail_clearly(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"test_batch not found; use the extracted files of the python version"):
        read_eval_source("c", f"cifar10:{tmp_path / 'cifar-10-batches-py'}", max_samples=0)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"cannot load .*test_batch"):
        read_eval_source("c", f"cifar10:{tmp_path}", max_samples=0)


# ---------------------------------------------------------------------------------------------- karpathy


def write_karpathy(path: Path, images_root: Path) -> None:
    write_image(images_root / "val2014" / "a.jpg", COLOURS[0], "JPEG")
    write_image(images_root / "b.jpg", COLOURS[1], "JPEG")  # Flickr-style entry: no filepath
    write_image(images_root / "val2014" / "train.jpg", COLOURS[2], "JPEG")
    sentences = [[{"raw": "A red square.", "tokens": ["a"]}, {"raw": "Red."}], [{"raw": "Green!"}]]
    entries = [{"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": sentences[0]},
               {"filepath": "val2014", "filename": "train.jpg", "split": "train", "sentences": sentences[1]},
               {"filename": "b.jpg", "split": "test", "sentences": sentences[1]},
               {"filepath": "val2014", "filename": "gone.jpg", "split": "test", "sentences": sentences[1]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": entries, "dataset": "coco"}))


def test_karpathy_test_split_keeps_every_caption(tmp_path: Path) -> None:
    write_karpathy(tmp_path / "coco" / "dataset_coco.json", tmp_path / "coco")
    source = read_eval_source("coco", f"karpathy:{tmp_path / 'coco' / 'dataset_coco.json'}", max_samples=0)
    samples = list(source.samples)
    assert source.classnames == [] and source.captioned
    assert [(s.key, s.captions, s.label) for s in samples] == [
        ("karpathy-000000", ["A red square.", "Red."], -1), ("karpathy-000001", ["Green!"], -1),
        ("karpathy-000002", ["Green!"], -1)]
    assert pixel(samples[0])[0] > 200 and pixel(samples[1])[1] > 200
    with pytest.raises(OSError, match="gone.jpg"):  # a missing image: write_shards counts it as bad_image
        samples[2].image.convert("RGB")


def test_karpathy_images_option_and_errors(tmp_path: Path) -> None:
    write_karpathy(tmp_path / "ann" / "dataset_coco.json", tmp_path / "images")
    spec = f"karpathy:{tmp_path / 'ann' / 'dataset_coco.json'}?images={tmp_path / 'images'}"
    manifest = write_shards(read_eval_source("coco", spec, max_samples=0).samples, tmp_path / "out", image_size=8,
                            samples_per_shard=10, jpeg_quality=90)
    assert manifest["num_samples"] == 2 and manifest["stats"]["skipped"] == {"bad_image": 1}
    with pytest.raises(ValueError, match=r"eval\.datasets\.coco.*not found; point it at dataset_coco\.json"):
        read_eval_source("coco", f"karpathy:{tmp_path / 'nope.json'}", max_samples=0)
    (tmp_path / "bad.json").write_text('{"annotations": []}')
    with pytest.raises(ValueError, match=r"not a Karpathy split file"):
        read_eval_source("coco", f"karpathy:{tmp_path / 'bad.json'}", max_samples=0)


# ---------------------------------------------------------------------------------------------- wds


def write_wds(folder: Path, num: int, *, with_txt: bool = True) -> str:
    """CLIP_benchmark's layout: <root>/test/{0..1}.tar, classnames.txt in <root>."""
    folder.mkdir(parents=True)
    for shard in range(2):
        with wds.TarWriter(str(folder / f"{shard}.tar")) as sink:
            for i in range(shard * num // 2, (shard + 1) * num // 2):
                sample = {"__key__": f"s{i:04d}", "jpg": image_bytes(COLOURS[i % 3]), "cls": i % 3}
                sink.write({**sample, "txt": f"caption {i}\nsecond {i}"} if with_txt else sample)
    return str(folder / "{0..1}.tar")


def test_wds_shards_with_classnames_one_folder_up(tmp_path: Path) -> None:
    pattern = write_wds(tmp_path / "set" / "test", 10)
    (tmp_path / "set" / "classnames.txt").write_text("red\ngreen\nblue\n")
    source = read_eval_source("w", f"wds:{pattern}", max_samples=0)
    samples = list(source.samples)
    assert source.classnames == ["red", "green", "blue"] and source.captioned
    assert [s.label for s in samples] == [i % 3 for i in range(10)]
    assert samples[4].captions == ["caption 4", "second 4"] and samples[4].key == "wds-00000004"
    capped = list(read_eval_source("w", f"wds:{pattern}", max_samples=4).samples)
    keys = [s.key for s in capped]
    assert len(keys) == 4 and keys == sorted(keys)
    assert keys == [s.key for s in read_eval_source("w", f"wds:{pattern}", max_samples=4).samples]  # seeded


def test_wds_without_class_names_cannot_serve_zero_shot(tmp_path: Path) -> None:
    pattern = write_wds(tmp_path / "shards", 4, with_txt=False)
    source = read_eval_source("w", f"wds:{pattern}", max_samples=0)
    assert source.classnames == [] and not source.captioned
    assert next(source.samples).captions == ["a photo of a class 0."]
    cfg = load_config(["+eval.datasets.w=folder:/x", "eval.zero_shot=w", "eval.retrieval="])
    with pytest.raises(ValueError, match=r"eval\.zero_shot='w': the set has no class names.*classnames\.txt"):
        check_eval_tasks("w", classnames=[], captioned=False, eval_cfg=cfg.eval)
    cfg = load_config(["+eval.datasets.w=folder:/x", "eval.zero_shot=", "eval.retrieval=w"])
    with pytest.raises(ValueError, match=r"eval\.retrieval='w': the set has no captions of its own"):
        check_eval_tasks("w", classnames=["a"], captioned=False, eval_cfg=cfg.eval)


def test_wds_missing_shards_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"eval\.datasets\.w.*2 of 2 shards not found"):
        read_eval_source("w", f"wds:{tmp_path}/{{0..1}}.tar", max_samples=0)
