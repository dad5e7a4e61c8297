"""data=raw prep as a SLURM job array on 2 nodes (cluster/mn-up.sh), from the S3 server to the S3 server, for
img2dataset tars and a parquet table: ``cluster.prep_tasks=2`` with ``cluster.cpus_per_task=2`` (a node's CPUs, so
each task takes a node of its own) runs task 0 and task 1 on different nodes (sacct's NodeList). The committed
shards hold the same samples (keys and bytes) and the manifest the same counts as a one-process prep's, and an
image planted in both partitions (task 1's shard 1 and task 0's shard 2, and two different input tars or table
rows) is kept once. Both nodes must be free when the array starts (the multinode tests run one at a time): with a
node busy, SLURM would run both tasks on the other one, one after the other, and the node check fails."""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures.multinode_cluster import MultiNodeCluster
from fixtures.raw_inputs import image
from fixtures.s3_server import S3Bucket
from integration.test_raw_prep_s3 import NO_EVAL, _put, _tar

from cluster.prep_jobs import PREP_JOBS
from ito_core.config import load_config
from ito_core.prep import prepare
from ito_core.storage import MANIFEST, build_store

RECORDS, PER_SHARD = 9, 3  # shards 0, 1, 2: task 0 of 2 writes shards 0 and 2, task 1 shard 1
COPY, ORIGINAL = 7, 4  # record 7 (shard 2, tar 1) repeats the image of record 4 (shard 1, tar 0)


def _picture(i: int) -> bytes:
    return image(ORIGINAL if i == COPY else i, (64, 48))


def _inputs(bucket: S3Bucket) -> dict[str, list[str]]:
    """The same 9 image-caption pairs as two img2dataset tars (records 0-4, 5-8) and as a parquet table."""
    for i in range(RECORDS):
        _put(bucket, f"in/folder/{i}.jpg", _picture(i))
    table = pa.table({"image": [f"folder/{i}.jpg" for i in range(RECORDS)],
                      "caption": [f"caption {i}" for i in range(RECORDS)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    _put(bucket, "in/pairs.parquet", buffer.getvalue())  # image paths relative to the table's folder
    for tar, records in enumerate((range(5), range(5, RECORDS))):
        _put(bucket, f"in/tars/{tar:05d}.tar",
             _tar([member for i in records for member in ((f"{i:09d}.jpg", _picture(i)), (f"{i:09d}.txt",
                                                                                          f"caption {i}"))]))
    return {"parquet": ["data.input_kind=table", f"data.input={bucket.url('in/pairs.parquet')}"],
            "img2dataset": ["data.input_kind=img2dataset", "data.caption_columns=[txt]",
                            f"data.input='{bucket.url('in/tars/{00000..00001}.tar')}'"]}  # quoted: braces


def _samples(bucket: S3Bucket, prefix: str, key: str, manifest: dict) -> set[tuple[str, bytes]]:
    """Every (member name, bytes) of the shards the manifest lists; the names are the samples' keys + extension."""
    members: set[tuple[str, bytes]] = set()
    for shard in manifest["shards"]:
        body = bucket.server.client.get_object(Bucket=bucket.name, Key=f"{prefix}/{key}/{shard['name']}")["Body"]
        with tarfile.open(fileobj=io.BytesIO(body.read())) as tar:
            members |= {(m.name, tar.extractfile(m).read()) for m in tar.getmembers()}
    return members


def _counts(manifest: dict) -> dict:
    return {"num_samples": manifest["num_samples"], "stats": manifest["stats"],
            "shards": [(shard["name"], shard["num_samples"]) for shard in manifest["shards"]]}


def _array_nodes(cluster: MultiNodeCluster, jobs: Path) -> dict[str, str]:
    """The node each task of the (one) prep array ran on, by sacct: {'<array>_0': 'mn1', ...}."""
    arrays = [p.name.split("_")[0] for p in jobs.glob("*_submission.sh") if "#SBATCH --array" in p.read_text()]
    assert len(arrays) == 1, f"one array was submitted: {arrays}"
    deadline = time.monotonic() + 30  # slurmdbd records a step's end a moment after the job returned its result
    while True:
        out = subprocess.run(cluster.command("sacct", "-X", "-n", "-P", "-o", "JobID,NodeList,State", "-j",
                                             arrays[0]), capture_output=True, text=True, check=True).stdout
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        if (len(rows) == 2 and all(state == "COMPLETED" for *_, state in rows)) or time.monotonic() > deadline:
            return {job_id: nodes for job_id, nodes, _ in rows}
        time.sleep(0.5)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["img2dataset", "parquet"])
def test_a_two_node_prep_array_equals_a_one_process_prep(mn_slurm: MultiNodeCluster, mn_bucket: S3Bucket,
                                                         tmp_path: Path, kind: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import stages

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", mn_bucket.server.endpoint_url)  # this process's input and shard reads
    overrides = ["data=raw", *_inputs(mn_bucket)[kind], *NO_EVAL, "data.image_size=32",
                 f"data.samples_per_shard={PER_SHARD}", "data.prep_workers=1", f"cluster.work_dir={tmp_path}"]
    one = load_config([*overrides, *mn_bucket.storage_overrides("one")])
    key = prepare(one.data, one.eval, build_store(one.storage))["train"]  # one process, the reference

    cfg = load_config([*overrides, *mn_bucket.storage_overrides("array"), "cluster=slurm", "cluster.prep_tasks=2",
                       "cluster.cpus_per_task=2", "cluster.timeout_min=10"])
    assert stages.prep_task.fn(cfg)["train"] == key  # the sweep's prep stage: the array, then the final job

    nodes = _array_nodes(mn_slurm, Path(cfg.cluster.work_dir).resolve() / key / PREP_JOBS)
    assert sorted(nodes.values()) == ["mn1", "mn2"], f"the array's 2 tasks ran on both nodes: {nodes}"
    reference, manifest = (build_store(c.storage).read_json(f"{key}/{MANIFEST}") for c in (one, cfg))
    assert _counts(manifest) == _counts(reference)
    assert reference["num_samples"] == RECORDS - 1 and reference["stats"]["skipped"] == {"duplicate": 1}
    samples = _samples(mn_bucket, "array", key, manifest)
    assert samples == _samples(mn_bucket, "one", key, reference)
    names = {name for name, _ in samples}  # a sample's key is its record's index in the input
    assert len(samples) == 2 * (RECORDS - 1) and f"{COPY:010d}.jpg" not in names and f"{ORIGINAL:010d}.jpg" in names, \
        "the copy in task 0's shard 2 was dropped, its first occurrence in task 1's shard 1 kept"
