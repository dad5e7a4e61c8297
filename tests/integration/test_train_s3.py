"""Training with ``storage=s3`` against a real S3 endpoint (rclone): a 2-rank ZeRO-2 run through
submitit's LocalExecutor commits its checkpoints to the bucket, and a run that lost its newest
checkpoint's manifest (a partial upload), its train manifest and its local staging resumes from the
older committed checkpoint downloaded from S3, ending bitwise equal to the uninterrupted run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fixtures.s3_server import S3Bucket, S3Server, set_aws_env
from fixtures.tiny_run import tiny_config

from cluster.jobs import node_scratch, submit_training, work_dir
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig
from ito_core.storage import MANIFEST, S3Store, build_store
from ito_core.strip import consolidate

pytestmark = [pytest.mark.s3, pytest.mark.distributed]

RUN = "runs/a"
CKPTS = f"{RUN}/checkpoints"


def _train(cfg: RunConfig, shards: list[str]) -> tuple[dict, str]:
    """(rank 0's summary, rank 0's log) of one submitit run."""
    job = submit_training(cfg, shard_paths=shards, shard_samples=[32, 32, 32], run_key=RUN)
    results = job.results()
    assert len(results) == 2
    return results[0], job.task(0).stderr() or ""


def _weights(store: S3Store, tag: str, into: Path) -> dict[str, torch.Tensor]:
    """Consolidated fp32 weights of a committed checkpoint, from a fresh download of its S3 folder."""
    store.download_dir(f"{CKPTS}/{tag}", into / tag)
    return consolidate(into, tag, zero_stage=2)


@pytest.fixture(scope="module")
def s3_run(s3_server: S3Server, small_shards: list[str],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunConfig, S3Store, S3Server]]:
    s3_server.ensure_running()
    with pytest.MonkeyPatch.context() as mp:
        set_aws_env(mp, s3_server)  # submitit's workers inherit the env: credentials never enter the config
        bucket = S3Bucket(s3_server, s3_server.new_bucket("train-s3"))
        cfg = tiny_config(tmp_path_factory.mktemp("train_s3"), "deepspeed=zero2", "cluster.tasks_per_node=2",
                          *bucket.storage_overrides("exp"))
        summary, _ = _train(cfg, small_shards)
        assert summary["step"] == 6
        store = build_store(cfg.storage)
        assert isinstance(store, S3Store)
        yield cfg, store, s3_server


def test_two_rank_zero2_commits_checkpoints_to_s3(s3_run: tuple[RunConfig, S3Store, S3Server]) -> None:
    _, store, server = s3_run
    assert committed_tags(store, CKPTS) == [tag_for(3), tag_for(6)]
    listing = server.client.list_objects_v2(Bucket=store.bucket, Prefix=f"exp/{CKPTS}/{tag_for(6)}/")
    names = sorted(item["Key"].rsplit("/", 1)[-1] for item in listing["Contents"])
    assert MANIFEST in names and "mp_rank_00_model_states.pt" in names
    assert sum(name.endswith("optim_states.pt") for name in names) == 2, "one ZeRO optimizer shard per rank"
    assert [row["step"] for row in store.read_json(f"{RUN}/train/{MANIFEST}")["history"]] == [3, 6]
    train_manifest = json.dumps(store.read_json(f"{RUN}/train/{MANIFEST}"))  # holds the resolved config
    assert server.endpoint_url in train_manifest and server.secret not in train_manifest


def test_resume_from_s3_after_a_partial_upload_is_bitwise_exact(
        s3_run: tuple[RunConfig, S3Store, S3Server], small_shards: list[str], tmp_path: Path) -> None:
    cfg, store, server = s3_run
    uninterrupted = _weights(store, tag_for(6), tmp_path / "uninterrupted")
    # The job died while step 6 was uploading (no manifest yet) and before the run was committed;
    # it comes back on a machine without the local staging.
    server.client.delete_object(Bucket=store.bucket, Key=f"exp/{CKPTS}/{tag_for(6)}/{MANIFEST}")
    server.client.delete_object(Bucket=store.bucket, Key=f"exp/{RUN}/train/{MANIFEST}")
    staging, scratch = work_dir(cfg, RUN) / "staging", node_scratch(cfg.cluster, RUN) / "node-0"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)

    summary, log = _train(cfg, small_shards)

    assert summary["step"] == 6
    assert f"resumed from {store.url(f'{CKPTS}/{tag_for(3)}')}" in log
    assert server.key not in log and server.secret not in log
    assert scratch.is_dir() and not list(scratch.glob("step_*")), "fetched into node-local scratch, loaded, removed"
    assert not list(staging.rglob("*.pt")), "checkpoints never pass through the shared work_dir"
    assert committed_tags(store, CKPTS) == [tag_for(3), tag_for(6)]
    resumed = _weights(store, tag_for(6), tmp_path / "resumed")
    assert uninterrupted.keys() == resumed.keys()
    for name in uninterrupted:
        assert torch.equal(uninterrupted[name], resumed[name]), name
