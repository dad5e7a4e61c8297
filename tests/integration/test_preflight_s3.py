"""The preflight's storage and inputs checks against a real S3 endpoint (rclone serve s3): wrong credentials and a
missing bucket end ``ito-sweep prep`` in one line before any work; a usable bucket passes and keeps no scratch
object; a missing s3:// data.input prefix is named."""

from __future__ import annotations

import os

import pytest
from fixtures.s3_server import S3Bucket

from flows import cli
from ito_core.config import load_config
from ito_core.preflight import check_inputs, check_storage, run_inputs


@pytest.fixture(autouse=True)
def cli_without_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main's Prefect defaults kept out of other tests; prep, the first stage, must not start."""
    for name in cli.PREFECT_DEFAULTS:
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)
    monkeypatch.setattr("flows.stages.prep_task.fn", lambda *a, **kw: pytest.fail("prep started"))


def test_wrong_credentials_and_a_missing_bucket_end_prep_in_one_line(
        s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    assert cli.main(["prep", *s3_bucket.storage_overrides()]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"storage.root='{s3_bucket.url('store')}'" in err and "refused the request (SignatureDoesNotMatch)" in err

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_bucket.server.secret)
    missing = [o.replace(s3_bucket.name, "no-such-bucket") for o in s3_bucket.storage_overrides()]
    assert cli.main(["prep", *missing]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "the bucket does not exist" in err and "storage.root" in err


def test_a_usable_bucket_passes_and_keeps_no_scratch_object_and_inputs_are_found_or_named(
        s3_bucket: S3Bucket) -> None:
    cfg = load_config([*s3_bucket.storage_overrides(), "data=raw", "data.input_kind=folder",
                       f"data.input={s3_bucket.url('photos')}"])
    finding = check_storage(cfg.storage)
    assert finding.status == "ok" and s3_bucket.keys("") == [], "the probe object was deleted"

    [missing] = check_inputs(run_inputs(cfg), endpoint_url=cfg.storage.endpoint_url)
    assert missing.failed and f"config data.input='{s3_bucket.url('photos')}': no objects under this prefix" in \
        missing.message
    s3_bucket.server.client.put_object(Bucket=s3_bucket.name, Key="photos/a.jpg", Body=b"jpeg")
    assert check_inputs(run_inputs(cfg), endpoint_url=cfg.storage.endpoint_url)[0].status == "ok"
