"""The artifact store and the shard reader against a real S3 endpoint (``rclone serve s3``).

The unit contract again on a real server, then what only a real server shows: data surviving a
restart, calls riding out a short outage, clear bounded failures, and training shards streamed
straight from S3 (also across a server crash mid-read).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from pathlib import Path

import pytest
import torch
from fixtures.s3_server import S3Bucket
from unit.storage.test_stores import WEIRD, StoreContract, make_artifact

from ito_core.artifacts import committed
from ito_core.data.loader import TrainStream, build_train_loader, open_shard
from ito_core.storage import MANIFEST, S3Store, StorageError, commit

pytestmark = pytest.mark.s3


@pytest.fixture
def store(s3_bucket: S3Bucket) -> S3Store:
    return S3Store(s3_bucket.url(f"{WEIRD}/root"), endpoint_url=s3_bucket.server.endpoint_url)


class TestRcloneStoreContract(StoreContract):
    pass


def _our_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("ito_core"))


def test_committed_artifact_survives_a_server_restart(store: S3Store, s3_bucket: S3Bucket, tmp_path: Path) -> None:
    source = make_artifact(tmp_path)
    store.upload_dir(source, "art")
    commit(store, "art", {"files": 2})
    s3_bucket.server.stop()
    s3_bucket.server.start()
    assert committed(store, "art") and store.list_dirs("") == ["art"]
    local = store.download_dir("art", tmp_path / "back")
    assert (local / "a.bin").read_bytes() == (source / "a.bin").read_bytes()


def test_calls_ride_out_a_short_outage(store: S3Store, s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture) -> None:
    server = s3_bucket.server
    store.write_json("before.json", [1])
    server.stop()
    restart = server.start_after(2.0)
    start = time.monotonic()
    try:
        store.write_json(f"during/{MANIFEST}", {"ok": True})  # connection refused until the server is back
        assert store.read_json("before.json") == [1]
    finally:
        restart.join()
    assert server.running and time.monotonic() - start >= 1.5
    assert committed(store, "during") and "retrying" in caplog.text
    assert server.key not in _our_log(caplog) and server.secret not in caplog.text


@pytest.mark.timeout(120)  # a call that never gave up would hang here; its speed is not what is tested
def test_an_outage_past_the_deadline_fails_clearly(s3_bucket: S3Bucket, caplog: pytest.LogCaptureFixture) -> None:
    server = s3_bucket.server
    store = S3Store(s3_bucket.url("p"), endpoint_url=server.endpoint_url, retry_deadline_s=1.0)
    server.stop()
    try:
        with pytest.raises(StorageError) as info:  # the deadline is the only thing that stops the retries
            store.list_dirs("runs")
    finally:
        server.start()
    message = str(info.value)
    assert server.endpoint_url in message and "Check that the S3 server is running" in message
    assert server.key not in message + _our_log(caplog) and server.secret not in message + caplog.text


def test_wrong_credentials_are_named_never_printed(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-1234")
    store = S3Store(s3_bucket.url("p"), endpoint_url=s3_bucket.server.endpoint_url)
    with pytest.raises(StorageError, match="SignatureDoesNotMatch.*AWS_SECRET_ACCESS_KEY") as info:
        store.write_text("k", "v")
    assert "wrong-secret-1234" not in str(info.value) and s3_bucket.server.key not in str(info.value)


# ------------------------------------------------------------------------------------- shards from S3

def _tokenize(texts: list[str]) -> torch.Tensor:
    return torch.tensor([[ord(c) for c in text[:24].ljust(24)] for text in texts])


def _batches(shards: list[str], num_workers: int) -> list[dict]:
    stream = TrainStream(shards, batch_size=8, num_texts=1, tokenizer=_tokenize, seed=4, rank=0, world_size=1,
                         shuffle_buffer=16, shard_samples=[32, 32, 32])
    return list(itertools.islice(build_train_loader(stream, num_workers=num_workers), 14))  # 112 > 96: 2 epochs


def test_train_stream_reads_shards_straight_from_s3(s3_bucket: S3Bucket, small_shards: list[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    client = s3_bucket.server.client
    urls = []
    for path in small_shards:
        client.upload_file(path, s3_bucket.name, f"shards/{WEIRD}/{Path(path).name}")
        urls.append(s3_bucket.url(f"shards/{WEIRD}/{Path(path).name}"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.server.endpoint_url)  # boto3 reads it natively

    local, remote = _batches(small_shards, num_workers=0), _batches(urls, num_workers=2)

    assert len(remote) == len(local) == 14
    for a, b in zip(local, remote, strict=True):
        assert a["keys"] == b["keys"] and torch.equal(a["images"], b["images"]) and torch.equal(a["texts"], b["texts"])


def test_shard_read_resumes_after_a_server_crash_mid_stream(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    server, payload = s3_bucket.server, os.urandom(16 << 20)  # far more than the sockets buffer
    server.client.put_object(Bucket=s3_bucket.name, Key="big.tar", Body=payload)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint_url)
    caplog.set_level(logging.WARNING, logger="ito_core")
    with open_shard(s3_bucket.url("big.tar")) as stream:
        head = stream.read(1 << 20)
        server.kill()
        restart = server.start_after(1.0)
        try:
            tail = stream.read()
        finally:
            restart.join()
    assert head + tail == payload
    assert "from byte" in caplog.text, "the read was resumed, not restarted"
