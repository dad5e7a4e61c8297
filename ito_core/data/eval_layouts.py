"""The readers of user eval sets, one per layout of ``ito_core.config.registry.EVAL_LAYOUTS`` (each layout is
described in ``ito_core.data.eval_sets``): ``(SourceSpec, *, max_samples) -> EvalSource``, plus the file and image
helpers they share."""

from __future__ import annotations

import io
import itertools
import json
import logging
import pickle
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from braceexpand import braceexpand
from PIL import Image

from ito_core.data.embedded import Sample, UnreadableImage
from ito_core.data.eval_sets import CLASSNAMES_FILE, EvalSource, SourceSpec, spread_indices
from ito_core.data.files import is_image_name, is_s3, list_files, read_bytes
from ito_core.data.loader import iter_shard_samples

log = logging.getLogger(__name__)
T = TypeVar("T")

# Not files.IMAGE_EXTENSIONS: more members would change eval shards under unchanged keys (artifacts.PREP_VERSION).
WDS_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
IMAGENET_CLASSNAMES = Path(__file__).with_name("imagenet_classnames.txt")  # see LICENSE-imagenet-classnames
IMAGENET_NUM_CLASSES = 1000
_WNID = re.compile(r"n\d{8}")
_SUBSET_SEED = "eval-subset"  # fixed: every grid point evaluates the same wds subset


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path.rstrip("/") else "."


def _read_lines(path: str) -> list[str] | None:
    """Non-empty stripped lines of a UTF-8 text file; None if there is no such file."""
    data = read_bytes(path, missing_ok=True)
    if data is None:
        return None
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def _list_files(source: SourceSpec, root: str) -> list[str]:
    """Every file under ``root``, relative to it, sorted; fails naming the key when there is none."""
    # Symlinked class folders count, as in torchvision's ImageFolder; whole-path order fixes what max_samples picks.
    files = sorted(list_files(root, follow_links=True))
    if not files:
        raise source.error(f"no files under {root}", "point it at an existing folder with the data set in it")
    return files


# What a missing or corrupt file raises (PIL: OSError, SyntaxError, ValueError, decompression bombs);
# a store that stays unreachable raises StorageError, which must stop prep rather than count as bad images.
_BAD_FILE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def _decode_image(data: bytes | None, where: str) -> Image.Image:
    if data is None:
        return UnreadableImage(where, "no image member")  # type: ignore[return-value]
    try:
        return Image.open(io.BytesIO(data))
    except _BAD_FILE as err:
        return UnreadableImage(where, err)  # type: ignore[return-value]


def _open_image(path: str) -> Image.Image:
    try:
        data = read_bytes(path)
    except _BAD_FILE as err:
        return UnreadableImage(path, err)  # type: ignore[return-value]
    return _decode_image(data, path)


def _picked(source: SourceSpec, count: int, max_samples: int) -> list[int]:
    indices = spread_indices(count, max_samples)
    log.info("eval set %s (%s): %d samples, keeping %d (eval.max_samples=%d)", source.name, source.layout, count,
             len(indices), max_samples)
    return indices


def _reservoir(items: Iterable[T], k: int) -> list[T]:
    """A uniform random ``k`` of ``items`` (Algorithm R, fixed seed), in their original order."""
    rng = random.Random(_SUBSET_SEED)
    kept: list[tuple[int, T]] = []
    for n, item in enumerate(items):
        if n < k:
            kept.append((n, item))
        elif (j := rng.randrange(n + 1)) < k:
            kept[j] = (n, item)
    return [item for _, item in sorted(kept, key=lambda pair: pair[0])]


def _class_caption(classnames: list[str], label: int) -> list[str]:
    name = classnames[label] if 0 <= label < len(classnames) else f"class {label}"
    return [f"a photo of a {name}."]


# ---------------------------------------------------------------------------------------------- layouts


def _class_tree(files: list[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class folders, (image path, label) in path order) of ``<class>/<...>/<image>`` files."""
    images = [f for f in files if "/" in f and is_image_name(f)]
    folders = sorted({f.split("/", 1)[0] for f in images})
    label = {folder: i for i, folder in enumerate(folders)}
    return folders, [(f, label[f.split("/", 1)[0]]) for f in images]


def _folder_samples(source: SourceSpec, items: list[tuple[str, int]], classnames: list[str],
                    sidecars: set[str], *, max_samples: int) -> Iterator[Sample]:
    for i in _picked(source, len(items), max_samples):
        rel, label = items[i]
        stem = rel.rsplit(".", 1)[0]
        captions = (_read_lines(_join(source.path, f"{stem}.txt")) if stem in sidecars else None)
        yield Sample(key=f"{source.layout}-{i:07d}", image=_open_image(_join(source.path, rel)),
                     captions=captions or _class_caption(classnames, label), label=label)


def read_folder(source: SourceSpec, *, max_samples: int) -> EvalSource:
    files = _list_files(source, source.path)
    folders, items = _class_tree(files)
    if not items:
        raise source.error(f"no images in class folders under {source.path}",
                           "lay it out as <root>/<class>/<image> (.jpg, .jpeg, .png, .webp, ...)")
    classnames = [f.replace("_", " ") for f in folders]
    if CLASSNAMES_FILE in files:
        classnames = _read_lines(_join(source.path, CLASSNAMES_FILE)) or []
        if len(classnames) != len(folders):
            raise source.error(f"{CLASSNAMES_FILE} names {len(classnames)} classes for {len(folders)} class folders",
                               "write one name per class folder, in sorted folder order")
    sidecars = {f[: -len(".txt")] for f in files if f.endswith(".txt")}
    captioned = any(rel.rsplit(".", 1)[0] in sidecars for rel, _ in items)
    return EvalSource(classnames, captioned, _folder_samples(source, items, classnames, sidecars,
                                                             max_samples=max_samples))


def read_imagenet(source: SourceSpec, *, max_samples: int) -> EvalSource:
    folders, items = _class_tree(_list_files(source, source.path))
    if len(folders) != IMAGENET_NUM_CLASSES or not all(_WNID.fullmatch(f) for f in folders):
        raise source.error(
            f"found {len(folders)} class folders with images under {source.path} ({folders[:3]}...), ImageNet val "
            f"needs the {IMAGENET_NUM_CLASSES} WordNet-id folders (n01440764/, ...)",
            "point it at the val folder laid out in class folders (the usual valprep.sh does that); for another "
            "class-folder tree use the folder layout")
    classnames = IMAGENET_CLASSNAMES.read_text().splitlines()
    return EvalSource(classnames, False, _folder_samples(source, items, classnames, set(), max_samples=max_samples))


# numpy's array reconstructor, taken from an array's own pickle recipe: pickles from numpy < 2 name it
# numpy.core.multiarray._reconstruct, from numpy 2 numpy._core.multiarray._reconstruct.
_NUMPY_RECONSTRUCT = np.zeros(0).__reduce__()[0]
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NUMPY_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
}
# layout -> (folder, test file, meta file, label key, class-name key)
_CIFAR = {"cifar10": ("cifar-10-batches-py", "test_batch", "batches.meta", "labels", "label_names"),
          "cifar100": ("cifar-100-python", "test", "meta", "fine_labels", "fine_label_names")}


class CifarUnpickler(pickle.Unpickler):
    """CIFAR's python files are pickles of dicts, lists, strings and numpy arrays: this loads those and refuses
    any other global (``os.system``, ...). The only pickles we load unrestricted are submitit's own."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CIFAR_GLOBALS:
            return _CIFAR_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: CIFAR files hold only numpy "
                                     "arrays, lists and strings")


def _load_cifar_file(source: SourceSpec, path: str, keys: tuple[str, ...]) -> dict[str, Any]:
    fix = f"use the extracted files of the python version of {source.layout} (cs.toronto.edu/~kriz/cifar.html)"
    try:
        loaded = CifarUnpickler(io.BytesIO(read_bytes(path)), encoding="bytes").load()
    except FileNotFoundError:
        raise source.error(f"{path} not found", fix) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise source.error(f"cannot load {path} ({err})", fix) from None
    entries = {k.decode() if isinstance(k, bytes) else k: v for k, v in dict(loaded).items()} \
        if isinstance(loaded, dict) else {}
    if missing := [k for k in keys if k not in entries]:
        raise source.error(f"{path} has no {missing}", fix)
    return entries


def read_cifar(source: SourceSpec, *, max_samples: int) -> EvalSource:
    folder, test_file, meta_file, label_key, names_key = _CIFAR[source.layout]
    files = _list_files(source, source.path)
    root = _join(source.path, folder) if test_file not in files and f"{folder}/{test_file}" in files \
        else source.path  # the batches folder itself, or torchvision's root above it
    batch = _load_cifar_file(source, _join(root, test_file), ("data", label_key))
    meta = _load_cifar_file(source, _join(root, meta_file), (names_key,))
    images_NHWC = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = [int(label) for label in batch[label_key]]
    classnames = [(n.decode() if isinstance(n, bytes) else str(n)).replace("_", " ") for n in meta[names_key]]
    if len(labels) != len(images_NHWC) or not all(0 <= label < len(classnames) for label in labels):
        raise source.error(f"{len(images_NHWC)} images, {len(labels)} labels, {len(classnames)} class names",
                           "the files do not match: re-extract the archive")
    samples = (Sample(key=f"{source.layout}-{i:05d}", image=Image.fromarray(images_NHWC[i]),
                      captions=_class_caption(classnames, labels[i]), label=labels[i])
               for i in _picked(source, len(labels), max_samples))
    return EvalSource(classnames, False, samples)


def read_karpathy(source: SourceSpec, *, max_samples: int) -> EvalSource:
    fix = "point it at dataset_coco.json or dataset_flickr30k.json of Karpathy's splits"
    try:
        test = [image for image in json.loads(read_bytes(source.path))["images"] if image["split"] == "test"]
    except FileNotFoundError:
        raise source.error(f"{source.path} not found", fix) from None
    except (ValueError, KeyError, TypeError) as err:  # not JSON, or not {"images": [{"split": ...}]}
        raise source.error(f"not a Karpathy split file ({err!r})", fix) from None
    if not test or not all(isinstance(image.get("filename"), str) for image in test):
        raise source.error("no test-split images with a 'filename'", fix)
    root = source.options.get("images") or _parent(source.path)
    return EvalSource([], True, _karpathy_samples(source, test, root, max_samples=max_samples))


def _karpathy_samples(source: SourceSpec, test: list[dict[str, Any]], root: str, *,
                      max_samples: int) -> Iterator[Sample]:
    for i in _picked(source, len(test), max_samples):
        image = test[i]
        rel = "/".join(part for part in (image.get("filepath", ""), image["filename"]) if part)
        captions = [s["raw"] for s in image.get("sentences", []) if isinstance(s, dict) and "raw" in s]
        yield Sample(key=f"karpathy-{i:06d}", image=_open_image(_join(root, rel)), captions=captions)


def read_wds(source: SourceSpec, *, max_samples: int) -> EvalSource:
    urls = list(braceexpand(source.path))
    if missing := [url for url in urls if not is_s3(url) and not Path(url).expanduser().is_file()]:
        raise source.error(f"{len(missing)} of {len(urls)} shards not found, e.g. {missing[0]}",
                           "point it at existing shards (brace patterns like {000000..000009}.tar expand)")
    shard_dir = _parent(urls[0])
    classnames = _read_lines(_join(shard_dir, CLASSNAMES_FILE)) or _read_lines(
        _join(_parent(shard_dir), CLASSNAMES_FILE)) or []
    raw: Iterator[tuple[int, dict[str, Any]]] = enumerate(iter_shard_samples(urls))
    if max_samples > 0:
        raw = iter(_reservoir(raw, max_samples))
    try:
        first = next(raw, None)
    except FileNotFoundError as err:  # a missing s3:// shard
        raise source.error(str(err), "point it at existing shards") from None
    if first is None:
        raise source.error("the shards hold no samples", "point it at non-empty shards")
    captioned = bool(_wds_captions(first[1]))  # judged by the first sample: a stream is read once
    samples = (_wds_sample(source, i, sample, classnames) for i, sample in itertools.chain([first], raw))
    return EvalSource(classnames, captioned, samples)


def _wds_meta(sample: dict[str, Any]) -> dict[str, Any]:
    try:
        meta = json.loads(sample["json"]) if "json" in sample else {}
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _wds_captions(sample: dict[str, Any]) -> list[str]:
    if "txt" in sample:
        return [line.strip() for line in sample["txt"].decode("utf-8", "replace").splitlines() if line.strip()]
    meta = _wds_meta(sample)
    captions = meta.get("captions", meta.get("caption", []))
    return [captions] if isinstance(captions, str) else [c for c in captions if isinstance(c, str)]


def _wds_sample(source: SourceSpec, i: int, sample: dict[str, Any], classnames: list[str]) -> Sample:
    where = f"{sample.get('__url__')}:{sample.get('__key__')}"
    raw_label = sample["cls"] if "cls" in sample else _wds_meta(sample).get("label", -1)
    try:
        label = int(raw_label)
    except (TypeError, ValueError):
        raise source.error(f"sample {where} has the label {raw_label!r}", "write integer class indices") from None
    image = next((sample[key] for key in WDS_IMAGE_KEYS if key in sample), None)
    captions = _wds_captions(sample) or (_class_caption(classnames, label) if label >= 0 else [])
    return Sample(key=f"wds-{i:08d}", image=_decode_image(image, where), captions=captions, label=label)

