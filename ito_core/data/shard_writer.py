"""One prep task (data=raw): a spill file of admitted samples -> one shard tar + its stats sidecar.

Runs in a prep worker process. The tar is written under a temporary name and renamed; the sidecar
(``<shard>.stats.json``: count, size, sha256, skips by reason, the image hashes the parent admitted)
is written after it, also atomically: a shard is finished when both exist and the tar has the
sidecar's size, so a rerun after a crash redoes exactly the unfinished shards.

Tar members follow webdataset's layout (``<key>.jpg``, ``<key>.json`` with ``{"captions", "label",
"source"}``) with fixed metadata, so the same input and config give the same bytes.
Only Pillow and the standard library, so spawning a worker stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ito_core.data.transcode import TranscodeOptions, transcode

SIDECAR_SUFFIX = ".stats.json"
RECORDS_SUFFIX = ".records.json"  # a prep array task's log of every record of a shard (prep_array.py)
EXAMPLES_PER_REASON = 3  # sources of skipped samples kept per reason, so a user can look at them
# Fixed (2000-01-01) so re-running prep gives identical bytes; an int, since a float mtime makes
# tarfile add a PAX header to every member (twice the headers to parse at read time).
TAR_MTIME = 946684800


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


@dataclass(frozen=True)
class ShardTask:
    index: int  # the shard holds input records [index * samples_per_shard, (index + 1) * samples_per_shard)
    spill: str  # samples the prep parent admitted (spill_sample), in input order
    out_dir: str
    options: TranscodeOptions
    skipped: dict[str, int] = field(default_factory=dict)  # reasons the parent already counted
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few skipped samples' sources
    hashes: list[int] = field(default_factory=list)  # image hashes the parent admitted (its duplicate index)
    # Prep array tasks: [key, image hash, skip reason, admitted, source] per input record, in input order
    records: list[list[Any]] | None = None


def write_shard(task: ShardTask) -> dict[str, Any]:
    """Transcode the task's samples into ``out_dir/shard-NNNNNN.tar``; return (and write) its sidecar."""
    out_dir, name = Path(task.out_dir), shard_name(task.index)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp"
    skipped, kept = Counter(task.skipped), 0
    examples = {reason: list(sources) for reason, sources in task.examples.items()}
    logged = {record[0]: record for record in task.records or []}
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for key, image, captions, source in _spilled(Path(task.spill)):
            reason, jpg = transcode(image, task.options)
            if reason:
                skipped[reason] += 1
                add_example(examples, reason, source)
                if logged:
                    logged[key][2] = reason  # admitted (its hash counts for duplicates), then not transcoded
                continue
            meta = json.dumps({"captions": captions, "label": -1, "source": source}, sort_keys=True)
            add_member(tar, f"{key}.jpg", jpg)
            add_member(tar, f"{key}.json", meta.encode("utf-8"))
            kept += 1
    sidecar: dict[str, Any] = {"name": name, "num_samples": kept, "skipped": dict(sorted(skipped.items())),
                               "examples": examples, "hashes": task.hashes, "sha256": "", "size": 0}
    if kept:
        sidecar |= {"sha256": sha256_file(tmp), "size": tmp.stat().st_size}
        os.replace(tmp, out_dir / name)
    else:
        tmp.unlink()  # an empty tar must not look like data; the sidecar alone marks the shard done
    if task.records is not None:
        write_json_atomic(out_dir / (name + RECORDS_SUFFIX), {"records": task.records})
    write_json_atomic(out_dir / (name + SIDECAR_SUFFIX), sidecar)
    Path(task.spill).unlink(missing_ok=True)
    return sidecar


def add_example(examples: dict[str, list[str]], reason: str, source: str) -> None:
    sources = examples.setdefault(reason, [])
    if len(sources) < EXAMPLES_PER_REASON:
        sources.append(source)


def spill_sample(f: BinaryIO, key: str, image: bytes, captions: list[str], source: str) -> None:
    """Append one admitted sample to a spill file: a JSON header line, then the image bytes. Not a pickle:
    the only pickles this project loads are submitit's own."""
    header = {"key": key, "captions": captions, "source": source, "size": len(image)}
    f.write(json.dumps(header).encode() + b"\n" + image)


def _spilled(path: Path) -> Iterator[tuple[str, bytes, list[str], str]]:
    """The samples ``spill_sample`` wrote to ``path``, one at a time."""
    with open(path, "rb") as f:
        while header_line := f.readline():
            header = json.loads(header_line)
            yield header["key"], f.read(header["size"]), header["captions"], header["source"]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), TAR_MTIME, 0o444, "bigdata", "bigdata"
    tar.addfile(info, io.BytesIO(data))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary name, then rename: readers never see a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
