"""User eval sets in the usual on-disk layouts, read as ``Sample`` streams for prep (nothing is downloaded). This
module parses a set's spec and checks what tasks it can serve; each layout's reader lives in ``eval_layouts`` and is
found through ``ito_core.config.registry.EVAL_LAYOUTS``, the table validation reads its names from.

``eval.datasets.<name>`` holds a source spec ``<layout>:<path>``; the path is local or ``s3://bucket/prefix``
(read with the shard reader's boto3 set-up: credentials and ``AWS_ENDPOINT_URL_S3`` from the environment).

Layouts (labels, class names; captions):

- ``folder``: ``root/<class>/<image>``; label = index of the sorted class folder (torchvision ImageFolder),
  names from ``root/classnames.txt`` (one per line) or the folder names with ``_`` -> space; captions from
  a ``<image stem>.txt`` beside the image (one per line), when there is one.
- ``imagenet``: ImageNet val as its 1000 WordNet-id class folders; OpenAI's curated class names
  (``imagenet_classnames.txt``); no captions.
- ``cifar10`` / ``cifar100``: the ``cifar-10-batches-py`` / ``cifar-100-python`` folder (or its parent):
  the test split, names from ``batches.meta`` / ``meta``; no captions.
- ``karpathy``: ``dataset_coco.json`` / ``dataset_flickr30k.json``; images under the JSON's folder, or
  ``?images=<root>``; every caption of the ``test`` split; no classes.
- ``wds``: webdataset shards (brace patterns) with jpg/png/webp and ``cls`` and/or ``txt`` (one caption per
  line) or ``json`` (``captions``/``label``); names from ``classnames.txt`` next to the shards or one folder
  up (CLIP_benchmark's layout).

Shards need a caption per sample, so a sample without one gets the stand-in ``"a photo of a <class>."``;
a set whose captions are all stand-ins is marked ``captioned=False`` and refused for retrieval and the
modality gap. Unreadable or missing images are skipped and counted by ``write_shards`` (``bad_image``).

``max_samples`` > 0 keeps an evenly spaced subset (every n/k-th item of the sorted list): class-balanced
for sets stored class by class like ImageNet val, where the first N would hold only the first classes. A
``wds`` stream, whose length is unknown until read, keeps a seeded uniform random subset, in stream order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from ito_core.config import EvalConfig, eval_task_sets
from ito_core.config.registry import EVAL_LAYOUT_OPTIONS, EVAL_LAYOUTS, resolve
from ito_core.data.embedded import Sample

CLASSNAMES_FILE = "classnames.txt"


@dataclass
class EvalSource:
    classnames: list[str]  # label order; [] when the set has no classes
    captioned: bool  # False when every caption is a class-name stand-in
    samples: Iterator[Sample]

    def manifest_fields(self) -> dict[str, Any]:
        return {"classnames": self.classnames, "captioned": self.captioned}


@dataclass(frozen=True)
class SourceSpec:
    name: str
    spec: str  # as configured, for messages
    layout: str
    path: str
    options: dict[str, str] = field(default_factory=dict)

    def error(self, problem: str, fix: str) -> ValueError:
        return ValueError(f"config eval.datasets.{self.name}={self.spec!r}: {problem}; {fix}")


def parse_source(name: str, spec: str) -> SourceSpec:
    """``<layout>:<path>[?option=value]`` -> ``SourceSpec``; unknown layouts and options fail naming the key."""
    layout, sep, rest = spec.partition(":")
    if not sep or layout not in EVAL_LAYOUTS:
        raise ValueError(f"config eval.datasets.{name}={spec!r}: unknown layout {layout!r}; write "
                         f"'<layout>:<path>' with one of {sorted(EVAL_LAYOUTS)}")
    path, _, query = rest.partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    source = SourceSpec(name, spec, layout, path.rstrip("/") or path, options)
    if not path:
        raise source.error("no path", "write '<layout>:<local path or s3://bucket/prefix>'")
    if unknown := sorted(set(options) - set(EVAL_LAYOUT_OPTIONS.get(layout, ()))):
        raise source.error(f"unknown options {unknown}", f"{layout} takes {list(EVAL_LAYOUT_OPTIONS.get(layout, ()))}")
    return source


def read_eval_source(name: str, spec: str, *, max_samples: int) -> EvalSource:
    """The user eval set ``eval.datasets.<name>=spec``: class names, whether it has captions, its samples."""
    source = parse_source(name, spec)
    return resolve(EVAL_LAYOUTS, source.layout)(source, max_samples=max_samples)


def check_eval_tasks(name: str, *, classnames: list[str], captioned: bool, eval_cfg: EvalConfig) -> None:
    """Fail naming the key when a task is pointed at a set that cannot serve it."""
    if name in eval_task_sets(eval_cfg, "zero_shot") and not classnames:
        raise ValueError(f"config eval.zero_shot={name!r}: the set has no class names; a wds set needs a "
                         f"{CLASSNAMES_FILE} (one name per line, in label order) next to its shards or one folder up, "
                         "a karpathy set has no classes (use it for eval.retrieval)")
    for task in ("retrieval", "modality_gap"):
        if name in eval_task_sets(eval_cfg, task) and not captioned:
            raise ValueError(f"config eval.{task}={name!r}: the set has no captions of its own (only class-name "
                             f"stand-ins); pick a captioned set (karpathy, or folder/wds with captions) or leave "
                             f"it out of eval.{task}")


def spread_indices(count: int, max_samples: int) -> list[int]:
    """Indices of ``max_samples`` evenly spaced items of ``count`` (all of them when max_samples <= 0)."""
    if max_samples <= 0 or max_samples >= count:
        return list(range(count))
    return [i * count // max_samples for i in range(max_samples)]
