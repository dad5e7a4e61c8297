"""Artifact-store semantics, the same for ``LocalStore`` and ``S3Store``.

``StoreContract`` holds the shared semantics; here it runs against a local folder and moto's
in-process S3, and tests/integration/test_s3_storage.py runs it again against the real rclone
endpoint. The rest checks what only one kind has: atomic local writes, S3 error handling.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from fixtures.s3_server import unused_port

from ito_core.artifacts import committed
from ito_core.config import StorageConfig
from ito_core.storage import (
    MANIFEST,
    ArtifactStore,
    LocalStore,
    S3Store,
    StorageError,
    build_store,
    commit,
)
from ito_core.storage.s3 import is_transient

WEIRD = "we ird/'q\"uote"  # spaces and quotes end up in keys (STYLE: weird paths for anything writing S3 keys)
FAKE_KEY, FAKE_SECRET = "AKIAUNITTESTKEY00001", "unit/test+secret/never-printed"


def make_artifact(tmp: Path) -> Path:
    """A folder to upload, with stale manifests that must never reach the store."""
    folder = tmp / "artifact"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(bytes(range(256)) * 3)
    (folder / "sub" / "b.txt").write_text("b")
    (folder / MANIFEST).write_text('{"stale": true}')
    (folder / "sub" / MANIFEST).write_text('{"stale": true}')
    return folder


class StoreContract:
    """Semantics every ArtifactStore has; subclasses provide a ``store`` fixture (an empty store)."""

    def test_json_round_trip_and_missing_keys(self, store: ArtifactStore) -> None:
        key = f"{WEIRD}/a.json"
        assert not store.exists(key)
        with pytest.raises(FileNotFoundError):
            store.read_json(key)
        store.write_json(key, {"k": [1, 2]})
        assert store.exists(key) and store.read_json(key) == {"k": [1, 2]}
        store.write_text(key, "[3]")  # overwrite
        assert store.read_json(key) == [3]
        assert not store.exists(WEIRD), "exists() is about files, a folder is not one"

    def test_upload_dir_never_commits_commit_does(self, store: ArtifactStore, tmp_path: Path) -> None:
        store.upload_dir(make_artifact(tmp_path), "art")
        assert store.exists("art/a.bin") and store.exists("art/sub/b.txt")
        assert not committed(store, "art"), "upload_dir copied a manifest: the artifact looks complete too early"
        assert not store.exists(f"art/sub/{MANIFEST}")
        commit(store, "art", {"files": 2})
        assert committed(store, "art") and store.read_json(f"art/{MANIFEST}") == {"files": 2}
        with pytest.raises(FileNotFoundError):
            store.upload_dir(tmp_path / "missing", "art2")

    def test_download_dir_round_trip(self, store: ArtifactStore, tmp_path: Path) -> None:
        source = make_artifact(tmp_path)
        store.upload_dir(source, f"{WEIRD}/art")
        commit(store, f"{WEIRD}/art", {"files": 2})
        local = store.download_dir(f"{WEIRD}/art", tmp_path / "download")
        assert (local / "a.bin").read_bytes() == (source / "a.bin").read_bytes()
        assert (local / "sub" / "b.txt").read_text() == "b"
        assert (local / MANIFEST).read_text().strip().startswith("{") and not (local / "sub" / MANIFEST).exists()
        with pytest.raises(FileNotFoundError):
            store.download_dir("missing", tmp_path / "download2")

    def test_list_dirs_lists_direct_children_only(self, store: ArtifactStore) -> None:
        for key in ("runs/step_1/x", "runs/step_10/x", "runs/step_2/sub/x", "runs/file.json", f"runs/{WEIRD}/x"):
            store.write_text(key, "x")
        assert store.list_dirs("runs") == sorted(["step_1", "step_10", "step_2", WEIRD.split("/")[0]])
        assert store.list_dirs("runs/step_2") == ["sub"]
        assert store.list_dirs("nothing") == []

    def test_delete_dir_removes_that_folder_only(self, store: ArtifactStore) -> None:
        for key in ("runs/step_1/a", "runs/step_1/sub/b", "runs/step_10/a", "runs/step_1.json"):
            store.write_text(key, "x")
        store.delete_dir("runs/step_1")
        assert store.list_dirs("runs") == ["step_10"]
        assert not store.exists("runs/step_1/a") and not store.exists("runs/step_1/sub/b")
        assert store.exists("runs/step_10/a") and store.exists("runs/step_1.json"), "a sibling sharing the prefix"
        store.delete_dir("runs/never-existed")


@pytest.fixture
def fake_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": FAKE_KEY, "AWS_SECRET_ACCESS_KEY": FAKE_SECRET,
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
                        "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def moto_store(fake_aws_env: None) -> Iterator[S3Store]:
    from moto import mock_aws

    with mock_aws():
        store = S3Store(f"s3://unit-bucket/{WEIRD}/root")
        store.client.create_bucket(Bucket="unit-bucket")
        yield store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / WEIRD / "store")
    return request.getfixturevalue("moto_store")


class TestStoreContract(StoreContract):
    pass


def test_local_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path)
    store.write_text("a/f.json", "old")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk died between write and rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        store.write_text("a/f.json", "new")
    assert (tmp_path / "a" / "f.json").read_text() == "old", "a reader must never see a partial file"
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.json"], "no temp file left behind"


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_local_files_and_folders_follow_the_umask(umask: int, tmp_path: Path) -> None:
    """On a shared filesystem teammates read the results: nothing keeps tempfile's 0600 or a temporary folder's
    0700 (report.md, config.json, manifests, model/, sweeps/<name>/ were written that way)."""
    import tempfile

    previous = os.umask(umask)
    try:
        store = LocalStore(tmp_path / "store")
        store.write_json("runs/r/config.json", {"a": 1})
        commit(store, "runs/r/train", {"step": 1})
        with tempfile.TemporaryDirectory() as tmp:  # 0700, with a 0600 file inside (as strip and the report make)
            (Path(tmp) / "sub").mkdir()
            with tempfile.NamedTemporaryFile("w", dir=Path(tmp) / "sub", delete=False, suffix=".bin") as made:
                made.write("weights")
            store.upload_dir(Path(tmp), "sweeps/s")
        written = [tmp_path / "store", *(tmp_path / "store").rglob("*")]
    finally:
        os.umask(previous)
    assert len(written) == 10  # store/, runs, r, config.json, train, manifest.json, sweeps, s, sub, the file
    for path in written:
        mode = path.stat().st_mode & 0o777
        assert mode == (0o777 if path.is_dir() else 0o666) & ~umask, f"{path}: {oct(mode)}"


def test_build_store_and_root_validation(tmp_path: Path, fake_aws_env: None) -> None:
    assert isinstance(build_store(StorageConfig(kind="local", root=str(tmp_path))), LocalStore)
    s3 = build_store(StorageConfig(kind="s3", root="s3://bucket/p/", endpoint_url="http://127.0.0.1:9"))
    assert isinstance(s3, S3Store) and s3.url("k/x.json") == "s3://bucket/p/k/x.json"
    with pytest.raises(ValueError, match="storage.root"):
        S3Store("bucket/prefix")


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def _wrapped(inner: BaseException) -> Exception:
    """How boto3's upload_file reports a failure: S3UploadFailedError raised while handling botocore's."""
    from boto3.exceptions import S3UploadFailedError

    try:
        raise inner
    except BaseException:
        try:
            raise S3UploadFailedError("Failed to upload")  # noqa: B904 - boto3 does exactly this
        except S3UploadFailedError as err:
            return err


@pytest.mark.parametrize(("err", "transient"), [
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), True),
    (ReadTimeoutError(endpoint_url="http://127.0.0.1:1"), True),
    (_client_error("SlowDown", 503), True),
    (_client_error("InternalError", 500), True),
    (_client_error("Weird", 502), True),
    (_wrapped(EndpointConnectionError(endpoint_url="http://x")), True),
    (_client_error("NoSuchKey", 404), False),
    (_client_error("AccessDenied", 403), False),
    (_wrapped(_client_error("NoSuchBucket", 404)), False),
    (FileNotFoundError("local file"), False),
])
def test_transient_errors_are_classified(err: Exception, transient: bool) -> None:
    assert is_transient(err) is transient


def _assert_no_credentials(text: str) -> None:
    assert FAKE_KEY not in text and FAKE_SECRET not in text


@pytest.mark.timeout(120)  # a call that never gave up would hang here; its speed is not what is tested
def test_unreachable_endpoint_fails_in_bounded_time_naming_it(
        fake_aws_env: None, caplog: pytest.LogCaptureFixture) -> None:
    endpoint = f"http://127.0.0.1:{unused_port()}"
    # 4 s: room for a retry after the first wait (0.25-0.35 s) even when the first, refused attempt is slow: late in
    # the full suite, with other tests' threads alive in this process, it once took 1.2 s from signing to connecting.
    # stop_before_delay gives up rather than start an attempt past the deadline.
    store = S3Store("s3://bucket/p", endpoint_url=endpoint, retry_deadline_s=4.0)
    caplog.set_level(logging.DEBUG)
    # The retry lines are collected on the store's own logger: what earlier tests in the session did to the root
    # logger's handlers (Prefect's logging set-up) must not decide whether this test sees them.
    retries: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = retries.append  # type: ignore[method-assign]
    store_logger = logging.getLogger("ito_core.storage")
    store_logger.addHandler(handler)
    try:
        with pytest.raises(StorageError) as info:  # the deadline is the only thing that stops the retries
            store.write_text("k.json", "{}")
    finally:
        store_logger.removeHandler(handler)
    message = str(info.value)
    assert endpoint in message and "s3://bucket/p/k.json" in message and "Check that the S3 server" in message
    assert any("retrying" in r.getMessage() for r in retries), "each retry is logged"
    _assert_no_credentials(message + "".join(r.getMessage() for r in caplog.records if r.name.startswith("ito_core")))
    # botocore's own DEBUG log shows the access key id in the signed request header, never the secret.
    assert FAKE_SECRET not in caplog.text


def test_transient_failures_are_retried_then_succeed(moto_store: S3Store, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    real_put, calls = moto_store.client.put_object, []

    def flaky_put(**kwargs: object) -> object:
        calls.append(kwargs["Key"])
        if len(calls) <= 2:
            raise _client_error("SlowDown", 503)
        return real_put(**kwargs)

    monkeypatch.setattr(moto_store.client, "put_object", flaky_put)
    moto_store.write_json("a.json", {"ok": True})
    assert len(calls) == 3 and moto_store.read_json("a.json") == {"ok": True}
    assert caplog.text.count("retrying") == 2
    _assert_no_credentials(caplog.text)


def test_missing_bucket_is_named(moto_store: S3Store) -> None:
    store = S3Store("s3://no-such-bucket/p")
    with pytest.raises(StorageError, match="bucket does not exist.*storage.root"):
        store.write_text("k", "v")


def test_missing_credentials_are_named(fake_aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = S3Store("s3://bucket/p", endpoint_url=f"http://127.0.0.1:{unused_port()}", retry_deadline_s=0.5)
    with pytest.raises(StorageError, match="no AWS credentials.*AWS_ACCESS_KEY_ID"):
        store.read_json("k")
