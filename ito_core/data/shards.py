"""Prep: validated, resized samples -> webdataset tar shards + ``manifest.json`` (written last).

Each sample becomes two tar members: ``<key>.jpg`` (square, ``image_size`` pixels, RGB JPEG) and
``<key>.json`` (``{"captions": [...], "label": int}``). Bad samples are skipped and counted by
reason in the manifest, never dropped silently. The same input gives the same bytes (fixed tar
metadata, sorted JSON), so shard hashes can serve as content addresses.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import webdataset as wds
from PIL import Image

from ito_core.data.embedded import Sample
from ito_core.data.shard_writer import TAR_MTIME, sha256_file, write_json_atomic
from ito_core.storage import MANIFEST

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_MAX_LOGGED_SKIPS = 10  # per-sample warnings; the rest only count in the manifest
_BAD_KEY = re.compile(r"[./\s]")  # webdataset splits member names at the first "." after the last "/"


def _abandon(writer: wds.ShardWriter) -> None:
    """Close the shard being written after an error (a full disk): webdataset would leave its file open when the
    tar's end does not fit. Nothing is committed either way, so a failing last write is of no interest here."""
    tar = getattr(writer, "tarstream", None)
    if tar is not None:
        with contextlib.suppress(OSError):
            tar.tarstream.close()  # marks the tar closed even when its end blocks cannot be written
        with contextlib.suppress(OSError):
            if tar.own_fileobj is not None:
                tar.own_fileobj.close()  # closes the file even when flushing it fails
    writer.tarstream = None


def write_shards(
    samples: Iterable[Sample],
    out_dir: Path,
    *,
    image_size: int,
    samples_per_shard: int,
    jpeg_quality: int,
    prefix: str = "shard",
) -> dict[str, Any]:
    """Write ``samples`` as shards ``<prefix>-000000.tar, ...`` into ``out_dir``; return the manifest.

    A manifest already in ``out_dir`` is removed first: until the new one is written the
    directory counts as incomplete, so a crash mid-way can never pair old manifest and new tars.
    """
    if image_size <= 0 or samples_per_shard <= 0 or not 1 <= jpeg_quality <= 100:
        raise ValueError(
            f"write_shards(image_size={image_size}, samples_per_shard={samples_per_shard}, "
            f"jpeg_quality={jpeg_quality}): need positive sizes and 1 <= jpeg_quality <= 100 "
            "(data.image_size, data.samples_per_shard, data.jpeg_quality)"
        )
    if not re.fullmatch(r"[A-Za-z0-9_-]+", prefix):
        raise ValueError(f"write_shards(prefix={prefix!r}): use letters, digits, '_' and '-' only")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)

    counts: dict[str, int] = {}  # shard name -> samples, in write order
    skipped: Counter[str] = Counter()
    seen_keys: set[str] = set()
    # Absolute, with "%" escaped: the pattern goes through %-formatting and webdataset's URL parser.
    pattern = str(out_dir.absolute()).replace("%", "%%") + f"/{prefix}-%06d.tar"
    writer = wds.ShardWriter(pattern, maxcount=samples_per_shard, verbose=0, mtime=TAR_MTIME)
    try:
        for sample in samples:
            reason, record = _encode_sample(sample, seen_keys, image_size=image_size, quality=jpeg_quality)
            if reason:
                skipped[reason] += 1
                if sum(skipped.values()) <= _MAX_LOGGED_SKIPS:
                    logger.warning("prep: skipping sample %r (%s)", getattr(sample, "key", None), reason)
                continue
            seen_keys.add(record["__key__"])
            writer.write(record)
            name = os.path.basename(writer.fname)  # after write(): the shard that got the sample
            counts[name] = counts.get(name, 0) + 1
        writer.close()
    except BaseException:
        _abandon(writer)
        raise

    kept = sum(counts.values())
    if kept == 0:
        # ShardWriter opens its first tar eagerly; an empty one must not look like data.
        Path(pattern % 0).unlink(missing_ok=True)
        raise ValueError(f"prep wrote no samples into {out_dir}: all were skipped ({dict(skipped)})")
    if skipped:
        logger.warning("prep: skipped %d samples: %s", sum(skipped.values()), dict(skipped))
    manifest = {
        "version": MANIFEST_VERSION,
        "image_size": image_size,
        "jpeg_quality": jpeg_quality,
        "shards": [
            {"name": name, "num_samples": n, "sha256": sha256_file(out_dir / name)} for name, n in counts.items()
        ],
        "num_samples": kept,
        "stats": {"kept": kept, "skipped": dict(sorted(skipped.items()))},
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """The manifest of a completed prep in ``out_dir`` (a missing one means prep did not finish)."""
    path = Path(out_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: prep not complete for {out_dir} (re-run the prep stage)")
    return json.loads(path.read_text())


def shard_paths(out_dir: Path) -> list[str]:
    """Paths of the shards a completed prep in ``out_dir`` lists, in manifest order."""
    return [str(Path(out_dir) / shard["name"]) for shard in read_manifest(out_dir)["shards"]]


def _encode_sample(
    sample: Sample, seen_keys: set[str], *, image_size: int, quality: int
) -> tuple[str, dict[str, Any]]:
    """(skip reason, "") or ("", webdataset record) for one sample."""
    key = getattr(sample, "key", None)
    if not isinstance(key, str) or not key or _BAD_KEY.search(key):
        return "bad_key", {}
    if key in seen_keys:
        return "duplicate_key", {}
    captions = clean_captions(getattr(sample, "captions", None))
    if not captions:
        return "no_caption", {}
    try:
        jpg = _encode_image(sample.image, image_size=image_size, quality=quality)
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ...) on corrupt input
        logger.debug("prep: image of %r failed: %r", key, exc)
        return "bad_image", {}
    meta = json.dumps({"captions": captions, "label": int(sample.label)}, sort_keys=True)
    return "", {"__key__": key, "jpg": jpg, "json": meta.encode("utf-8")}


def clean_captions(captions: Any) -> list[str]:
    """Drop control/format characters, collapse whitespace, drop empty and repeated captions."""
    if isinstance(captions, str) or not isinstance(captions, list | tuple):
        return []
    cleaned: list[str] = []
    for caption in captions:
        if not isinstance(caption, str):
            continue
        text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in caption)
        text = " ".join(text.split())
        if text and text not in cleaned:
            cleaned.append(text)
    return cleaned


def _encode_image(image: Image.Image, *, image_size: int, quality: int) -> bytes:
    """Resize the shorter side to ``image_size`` (bicubic), centre-crop square, encode JPEG."""
    image = image.convert("RGB")  # also forces a lazy (possibly truncated) file to load
    width, height = image.size
    if (width, height) != (image_size, image_size):
        scale = image_size / min(width, height)
        resized = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
        image = image.resize(resized, Image.Resampling.BICUBIC)
        left, top = (resized[0] - image_size) // 2, (resized[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
