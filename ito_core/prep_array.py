"""``data=raw`` prep as a job array: task ``t`` of ``T`` writes its share of the shards, a final step dedups.

The shard plan is ``raw_prep.py``'s (shard ``i`` holds input records ``[i * S, (i + 1) * S)``), so what a shard
holds never depends on ``T``; ``data/prep_parts.py`` says which shards are a task's (a contiguous block for
img2dataset tars, whose other tars it never reads; else ``i % T == t``, listing the whole input). A task
fetches, checks, transcodes and writes only its own shards (``raw_prep.write_raw_shards(part=(t, T))``),
removing the duplicates it sees among them, and logs every record of each shard (``<shard>.records.json``:
key, image hash, skip reason, admitted, source). A task's rerun skips its finished shards (tar + sidecar + log
present), so a killed task redoes only the shards it had not finished; ``task-<t>-of-<T>.json`` marks a task done.

The final step (``finish_array``) makes the result exactly a one-process prep's: duplicates across tasks are
found from the logs (the first admission of an image hash in input order wins, as in one process) and dropped
from the later shards, whose tar, sidecar and log are rewritten as one process would have written them (the
same tar members in the same order); then the manifest is committed. Its memory is one hash per admitted
image, like the one-process prep's duplicate index.

``data=webdataset`` (the user's own shards, only indexed) is spread the same way: task ``t`` counts the samples
of shards ``t, t + T, ...`` (``index_task``), the final step commits the manifest one process would
(``finish_index``). A rerun of a task counts its shards again (reading, nothing written but its marker).
"""

from __future__ import annotations

import logging
import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from ito_core.artifacts import committed, member_key, prep_task_marker, read_manifest
from ito_core.config import DataConfig
from ito_core.data.external import count_samples, external_shards, index_external
from ito_core.data.raw_prep import raw_manifest, write_raw_shards
from ito_core.data.shard_io import iter_shard_samples
from ito_core.data.shard_writer import (
    RECORDS_SUFFIX,
    SIDECAR_SUFFIX,
    add_example,
    add_member,
    sha256_file,
    shard_name,
    write_json_atomic,
)
from ito_core.storage import ArtifactStore, commit

log = logging.getLogger(__name__)

def prep_task(data: DataConfig, store: ArtifactStore, key: str, *, task: int, num_tasks: int) -> dict[str, Any]:
    """Task ``task`` of the array: write its missing shards, then its done-marker."""
    if not 0 <= task < num_tasks:
        raise ValueError(f"prep task {task} of {num_tasks}: need 0 <= task < cluster.prep_tasks")
    if committed(store, key):
        return {"task": task, "num_shards": len(read_manifest(store, key)["shards"]), "written": 0}  # nothing to do
    sidecars, num_shards, reused = write_raw_shards(data, store, key, part=(task, num_tasks))
    done = {"task": task, "num_shards": num_shards, "written": len(sidecars) - reused}
    store.write_json(prep_task_marker(key, task, num_tasks), done)
    log.info("prep task %d/%d: wrote %d shards, %d were done before (the input makes %d)", task, num_tasks,
             len(sidecars) - reused, reused, num_shards)
    return done


def index_task(data: DataConfig, store: ArtifactStore, key: str, *, task: int, num_tasks: int) -> dict[str, Any]:
    """Task ``task`` of a ``data=webdataset`` index array: count its shards' samples into its marker."""
    counts = {url: count_samples(url) for url in external_shards(data)[task::num_tasks]}
    store.write_json(prep_task_marker(key, task, num_tasks), {"task": task, "counts": counts, "written": len(counts)})
    return {"task": task, "written": len(counts)}


def finish_index(data: DataConfig, store: ArtifactStore, key: str, *, num_tasks: int) -> dict[str, Any]:
    """Commit the ``data=webdataset`` manifest from the tasks' counts; return it."""
    if not committed(store, key):
        counts: dict[str, int] = {}
        for marker in _markers(store, key, num_tasks):
            counts |= store.read_json(marker)["counts"]
        index_external(store, key, data, counts=counts)
    return read_manifest(store, key)


def _markers(store: ArtifactStore, key: str, num_tasks: int) -> list[str]:
    markers = [prep_task_marker(key, t, num_tasks) for t in range(num_tasks)]
    if missing := [m for m in markers if not store.exists(m)]:
        raise ValueError(f"prep: {len(missing)} of {num_tasks} array tasks have not finished ({missing[:3]}): "
                         "run the prep stage again (finished shards are kept)")
    return markers


def finish_array(data: DataConfig, store: ArtifactStore, key: str, *, num_tasks: int) -> dict[str, Any]:
    """Drop duplicates across tasks, rewrite the shards that held them, commit the manifest; return it."""
    if committed(store, key):
        return read_manifest(store, key)
    num_shards = {store.read_json(m)["num_shards"] for m in _markers(store, key, num_tasks)}
    assert len(num_shards) == 1, f"tasks disagree on the input's shard count: {num_shards}"
    shards = range(num_shards.pop())
    logs = [store.read_json(member_key(key, shard_name(i) + RECORDS_SUFFIX))["records"] for i in shards]
    sidecars = [store.read_json(member_key(key, shard_name(i) + SIDECAR_SUFFIX)) for i in shards]
    first: dict[int, int] = {}  # image hash -> the shard that admitted it first
    for i, records in zip(shards, logs, strict=True):
        for _, digest, _, admitted, _ in records:
            if admitted:
                first.setdefault(digest, i)
    for i, records in zip(shards, logs, strict=True):
        dropped = {rec[0] for rec in records if rec[3] and first[rec[1]] != i}
        if dropped:
            log.info("prep: %s holds %d images an earlier shard has: dropping them", shard_name(i), len(dropped))
            sidecars[i] = _drop(store, key, i, records, dropped)
    manifest = raw_manifest(sidecars, data)
    commit(store, key, manifest)
    log.info("prep: committed %d samples in %d shards from %d array tasks to %s", manifest["num_samples"],
             len(manifest["shards"]), num_tasks, store.url(key))
    return manifest


def _drop(store: ArtifactStore, key: str, index: int, records: list[list[Any]], dropped: set[str]) -> dict[str, Any]:
    """Shard ``index`` as one process writes it when ``dropped`` are duplicates: tar, log, then sidecar."""
    for record in records:
        if record[0] in dropped:
            record[2], record[3] = "duplicate", 0
    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for _, _, reason, _, source in records:  # in input order, as the one-process prep counts them
        if reason:
            skipped[reason] += 1
            add_example(examples, reason, source)
    name = shard_name(index)
    with tempfile.TemporaryDirectory(prefix="ito-prep-dedup-") as tmp:
        out = store.local_dir(key) or Path(tmp)
        tar_path, kept = out / f".{name}.tmp", 0
        with tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for sample in iter_shard_samples([store.url(member_key(key, name))]):
                if sample["__key__"] not in dropped:
                    add_member(tar, f"{sample['__key__']}.jpg", sample["jpg"])
                    add_member(tar, f"{sample['__key__']}.json", sample["json"])
                    kept += 1
        sidecar: dict[str, Any] = {"name": name, "num_samples": kept, "skipped": dict(sorted(skipped.items())),
                                   "examples": examples, "hashes": [rec[1] for rec in records if rec[3]],
                                   "sha256": "", "size": 0}
        if kept:
            sidecar |= {"sha256": sha256_file(tar_path), "size": tar_path.stat().st_size}
            tar_path.replace(out / name)
        else:
            tar_path.unlink()
            if store.local_dir(key) is not None:
                (out / name).unlink(missing_ok=True)  # on S3 it stays, unlisted by the manifest
        write_json_atomic(out / (name + RECORDS_SUFFIX), {"records": records})
        write_json_atomic(out / (name + SIDECAR_SUFFIX), sidecar)
        if store.local_dir(key) is None:
            store.upload_dir(out, key)
    return sidecar
