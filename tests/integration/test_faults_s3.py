"""Training on the real S3 endpoint (rclone) through faults: nothing is lost.

- the ranks killed while a checkpoint uploads in the background (``train.async_checkpoint``, the default) and
  training already went on past that save: the tag stays uncommitted, the resume starts from the tag before,
  and the run ends bitwise equal to the uninterrupted one;
- rank 0 killed in the middle of committing a checkpoint (synchronous uploads: its shards up, the manifest not):
  the partial tag in the bucket is never resumed from and is replaced by the resumed run's own commit;
- the endpoint stopped for 30 s while a checkpoint uploads: the upload retries with backoff and the
  run goes on; the run still ends bitwise equal to the uninterrupted one;
- the endpoint gone for good: the train stage fails within a bounded time, naming the endpoint and
  what to check, with rank 0's log tail; once the endpoint is back, the run resumes and finishes,
  bitwise equal again.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest
from fixtures.faults import (
    CKPTS,
    REFERENCE,
    RUN,
    Fault,
    TrainRanks,
    assert_bitwise,
    checkpoint_weights,
    logged_losses,
    two_rank_config,
)
from fixtures.s3_server import S3Bucket

from cluster.jobs import submit_training
from cluster.waiting import JobFailedError, wait_streaming
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig
from ito_core.storage import MANIFEST, S3Store, build_store

pytestmark = [pytest.mark.s3, pytest.mark.distributed, pytest.mark.timeout(600)]

OUTAGE_S = 30.0


def s3_config(tmp: Path, bucket: S3Bucket, *overrides: str) -> tuple[RunConfig, S3Store]:
    cfg = two_rank_config(tmp, *REFERENCE, *bucket.storage_overrides("exp"), *overrides)
    store = build_store(cfg.storage)
    assert isinstance(store, S3Store)
    return cfg, store


def aws_env() -> dict[str, str]:
    """The credentials ``s3_bucket`` put in this process's env, for rank processes forked elsewhere."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


def objects(bucket: S3Bucket, prefix: str) -> list[str]:
    listing = bucket.server.client.list_objects_v2(Bucket=bucket.name, Prefix=prefix)
    return sorted(item["Key"].rsplit("/", 1)[-1] for item in listing.get("Contents", []))


def test_killed_while_an_async_upload_is_in_flight_resumes_from_the_tag_before(
        ranks: TrainRanks, s3_bucket: S3Bucket, small_shards: list[str], reference_run: RunConfig,
        tmp_path: Path) -> None:
    cfg, store = s3_config(tmp_path, s3_bucket, "train.async_checkpoint=true")
    release = tmp_path / "release-upload"  # never created: the upload of step 4 stays in flight until the kill

    # Rank 0's uploader holds its second file of step 4 (the first may be going up) while training goes on.
    held = Fault("ito_core.storage.s3.S3Calls.call", match=f"/{tag_for(4)}/", nth=2, hold_until=str(release))
    killed = ranks.start(cfg, shards=small_shards, name="async-killed", env=aws_env(), fault=held)
    killed.wait_for_text(f"holding ito_core.storage.s3.S3Calls.call(upload {cfg.cluster.scratch_dir}")
    killed.wait_for_text("step 5/8 ")  # the save of step 4 returned before its upload ended
    assert committed_tags(store, CKPTS) == [tag_for(2)], "committed while its upload was in flight"
    killed.kill_all()
    assert MANIFEST not in objects(s3_bucket, f"exp/{CKPTS}/{tag_for(4)}/")

    resumed = ranks.start(cfg, shards=small_shards, name="async-resumed", env=aws_env())
    resumed.finish()
    log = resumed.log()
    assert f"resumed from {store.url(f'{CKPTS}/{tag_for(2)}')}" in log, "the uncommitted step 4 was not chosen"
    assert f"checkpoint {tag_for(8)} uploaded in " in log and "before the end of training" in log, "the wait is logged"
    assert store.list_dirs(CKPTS) == committed_tags(store, CKPTS) == [tag_for(6), tag_for(8)], "partial step 4 gone"
    expected = checkpoint_weights(reference_run, tag_for(8), tmp_path / "reference")
    assert_bitwise(expected, checkpoint_weights(cfg, tag_for(8), tmp_path / "download"))
    assert logged_losses(cfg) == logged_losses(reference_run)


def test_upload_killed_midway_then_a_30s_outage_during_an_upload(
        ranks: TrainRanks, s3_bucket: S3Bucket, small_shards: list[str], reference_run: RunConfig,
        tmp_path: Path) -> None:
    cfg, store = s3_config(tmp_path, s3_bucket, "train.async_checkpoint=false")
    server, step4 = s3_bucket.server, f"exp/{CKPTS}/{tag_for(4)}/"

    # Rank 0 dies uploading step 4 once its shards are up, before the manifest (each S3 call goes through
    # S3Calls.call; the shards go up several at once, so the manifest is the one call with a fixed place).
    killed = ranks.start(cfg, shards=small_shards, name="upload-killed", env=aws_env(),
                         fault=Fault("ito_core.storage.s3.S3Calls.call", match=f"/{tag_for(4)}/{MANIFEST}", nth=1))
    assert killed.join(120)[0] == -signal.SIGKILL
    assert committed_tags(store, CKPTS) == [tag_for(2)]
    assert MANIFEST not in objects(s3_bucket, step4) and "mp_rank_00_model_states.pt" in objects(s3_bucket, step4)

    resumed = ranks.start(cfg, shards=small_shards, name="outage", env=aws_env())
    resumed.wait_for_text("step 5/8 ")  # the next S3 call is step 6's upload
    resumed.pause()  # the ranks wait while rclone finishes its requests in flight and stops
    server.stop()
    stopped = time.monotonic()
    restart = server.start_after(OUTAGE_S)
    resumed.cont()
    try:
        resumed.finish()
    finally:
        restart.join()

    log = resumed.log()
    assert f"resumed from {store.url(f'{CKPTS}/{tag_for(2)}')}" in log, "the partial step 4 was not chosen"
    retries = [line for line in log.splitlines() if "retrying for up to" in line]
    assert retries and f"upload {cfg.cluster.scratch_dir}" in retries[0], "a checkpoint upload retried"
    assert time.monotonic() - stopped >= OUTAGE_S
    assert server.key not in log and server.secret not in log
    assert store.list_dirs(CKPTS) == committed_tags(store, CKPTS) == [tag_for(6), tag_for(8)], "partial step 4 gone"
    expected = checkpoint_weights(reference_run, tag_for(8), tmp_path / "reference")
    assert_bitwise(expected, checkpoint_weights(cfg, tag_for(8), tmp_path / "download"))
    assert logged_losses(cfg) == logged_losses(reference_run)


def test_endpoint_gone_fails_the_stage_clearly_and_a_later_run_resumes(
        ranks: TrainRanks, s3_bucket: S3Bucket, small_shards: list[str], reference_run: RunConfig,
        tmp_path: Path) -> None:
    cfg, store = s3_config(tmp_path, s3_bucket, "storage.retry_deadline_s=3")
    server = s3_bucket.server
    job = submit_training(cfg, shard_paths=small_shards, shard_samples=[32] * 3, run_key=RUN)  # the train stage's job
    deadline = time.monotonic() + 300
    while not objects(s3_bucket, f"exp/{CKPTS}/{tag_for(2)}/").count(MANIFEST):
        assert time.monotonic() < deadline and not job.done(), "step 2 was never committed"
        time.sleep(0.2)
    server.kill()  # at once: the run must not get further than step 4's upload
    stopped = time.monotonic()
    try:
        with pytest.raises(JobFailedError) as failure:
            wait_streaming(job, logging.getLogger("test.faults.s3"), poll_s=0.5)
        failed_after = time.monotonic() - stopped
        print(f"the train stage failed {failed_after:.1f} s after the endpoint went away")
    finally:
        server.start()

    message = str(failure.value)  # "kept failing": the retry deadline, not a hang, ended it (no bound on the time)
    assert f"S3 endpoint {server.endpoint_url} kept failing" in message, message[-3000:]
    assert "Check that the S3 server is running" in message and "storage.endpoint_url" in message
    assert "--- last lines of rank 0's log ---" in message
    assert server.key not in message and server.secret not in message
    assert committed_tags(store, CKPTS) == [tag_for(2)]

    later = ranks.start(cfg, shards=small_shards, name="later", env=aws_env())
    later.finish()
    assert f"resumed from {store.url(f'{CKPTS}/{tag_for(2)}')}" in later.log()
    expected = checkpoint_weights(reference_run, tag_for(8), tmp_path / "reference")
    assert_bitwise(expected, checkpoint_weights(cfg, tag_for(8), tmp_path / "download"))
