"""Resume at another world size across nodes (S3 storage): a checkpoint written by 2 nodes x 1 rank resumes on
1 node x 1 rank, and one written by 1 node resumes on 2 nodes.

Each resume starts from a copy of step 3 of a finished run (as if that run had been killed there), at the same
global batch (gradient accumulation makes up for the missing rank), through a DeepSpeed universal checkpoint
that every node converts in its own scratch. It ends at step 6 with the new world size in its manifest. (That the
loaded state equals the saved one, bit for bit, is tests/integration/test_world_size_resume.py's proof; the
losses after it differ because augmentation streams are seeded per rank.)
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import submitit
from fixtures.multinode_cluster import MultiNodeCluster
from fixtures.s3_server import S3Bucket
from fixtures.tiny_run import tiny_config

from cluster.jobs import submit_training
from cluster.waiting import wait_streaming
from ito_core.checkpoint import tag_for
from ito_core.storage import MANIFEST

RUN_KEY = "runs/world-size"
CKPTS = f"{RUN_KEY}/checkpoints"
OPTIONS = ("deepspeed=zero2", "train.micro_batch_size=8", "cluster=slurm", "cluster.tasks_per_node=1",
           "cluster.timeout_min=20")


def _train(bucket: S3Bucket, tmp: Path, prefix: str, nodes: int, shards: list[str],
           jobs: list[submitit.Job]) -> tuple[dict, str]:
    cfg = tiny_config(tmp / prefix, *OPTIONS, f"cluster.nodes={nodes}", *bucket.storage_overrides(prefix))
    job = submit_training(cfg, shard_paths=shards, shard_samples=[32, 32, 32], run_key=RUN_KEY)
    jobs.append(job)
    summary = wait_streaming(job, logging.getLogger("test.multinode.world_size"), poll_s=0.5)
    return summary, Path(job.task(0).paths.stderr).read_text(errors="replace")


def _copy_tag(bucket: S3Bucket, source: str, target: str) -> None:
    """A run killed after committing ``tag``: its shards and manifest under another prefix."""
    client, prefix = bucket.server.client, f"{source}/{CKPTS}/{tag_for(3)}/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket.name, Prefix=prefix):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=bucket.name, Key=item["Key"].replace(source, target, 1),
                               CopySource={"Bucket": bucket.name, "Key": item["Key"]})


def _manifest(bucket: S3Bucket, prefix: str, step: int) -> dict:
    key = f"{prefix}/{CKPTS}/{tag_for(step)}/{MANIFEST}"
    return json.loads(bucket.read(key))


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("saved_nodes", "resumed_nodes"), [(2, 1), (1, 2)])
def test_checkpoint_resumes_on_another_number_of_nodes(
        saved_nodes: int, resumed_nodes: int, mn_slurm: MultiNodeCluster, mn_bucket: S3Bucket,
        small_shards: list[str], tmp_path: Path, jobs: list[submitit.Job]) -> None:
    original, _ = _train(mn_bucket, tmp_path, "original", saved_nodes, small_shards, jobs)
    assert original["step"] == 6 and _manifest(mn_bucket, "original", 3)["world_size"] == saved_nodes
    _copy_tag(mn_bucket, "original", "resumed")

    resumed, rank0_log = _train(mn_bucket, tmp_path, "resumed", resumed_nodes, small_shards, jobs)

    assert f"(saved by {saved_nodes} ranks, via a universal checkpoint)" in rank0_log
    assert f"world size {resumed_nodes}, at step 3" in rank0_log
    assert [row["step"] for row in resumed["history"]] == [3, 6]  # step 3 from the original run
    assert _manifest(mn_bucket, "resumed", 6)["world_size"] == resumed_nodes
    assert resumed["history"][0] == original["history"][0]
    assert math.isfinite(resumed["history"][1]["loss"])
