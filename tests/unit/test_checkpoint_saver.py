"""When a checkpoint is committed: with a remote store, only once its upload ended; asynchronously, training goes on
meanwhile and a later step (or the next save, or the end) commits it; a failed upload commits nothing and fails every
rank. One gloo rank, a fake engine (it writes one file) and a store whose uploads wait for a gate the test opens."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ito_core.artifacts import committed, read_manifest
from ito_core.checkpoint import CheckpointSaver, tag_for
from ito_core.checkpoint_upload import BackgroundUpload
from ito_core.distributed import free_port
from ito_core.storage import LocalStore, StorageError

KEY = "runs/r/checkpoints"


@pytest.fixture(scope="module", autouse=True)
def one_rank() -> Iterator[None]:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


class FakeEngine:
    device = torch.device("cpu")

    def __init__(self) -> None:
        self.module = torch.nn.Linear(2, 2)

    def zero_optimization_stage(self) -> int:
        return 2

    def save_checkpoint(self, save_dir: str, *, tag: str, client_state: dict, save_latest: bool) -> None:
        assert not save_latest
        (Path(save_dir) / tag).mkdir(parents=True)
        torch.save(client_state, Path(save_dir) / tag / "mp_rank_00_model_states.pt")


class GatedRemoteStore(LocalStore):
    """Remote to the saver (no local folder to write into); each upload waits for ``gate``, then fails if told to."""

    def __init__(self, root: Path, *, fail: bool = False) -> None:
        super().__init__(root)
        self.gate, self.fail = threading.Event(), fail

    def upload_dir(self, local_dir: Path, key: str) -> None:
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            raise StorageError("upload failed: the S3 endpoint kept failing")
        super().upload_dir(local_dir, key)

    def local_dir(self, key: str) -> Path | None:
        return None


def saver_for(tmp_path: Path, store: LocalStore, *, asynchronous: bool) -> CheckpointSaver:
    return CheckpointSaver(FakeEngine(), store=store, key=KEY, staging=tmp_path / "scratch", keep=2,
                           asynchronous=asynchronous)


def is_committed(store: LocalStore, step: int) -> bool:
    return committed(store, f"{KEY}/{tag_for(step)}")


def test_async_save_returns_before_the_upload_and_a_later_step_commits(tmp_path: Path) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    saver, state = saver_for(tmp_path, store, asynchronous=True), {"step": 2, "history": [{"loss": 1.0}]}
    saver.save(step=2, train_state=state)
    state["history"].append({"loss": 0.5})  # training goes on changing its state while the upload runs
    saver.poll()
    assert not is_committed(store, 2), "committed before its upload ended"
    assert (tmp_path / "scratch" / tag_for(2)).is_dir()

    store.gate.set()
    saver.pending.upload.wait()
    saver.poll()
    assert is_committed(store, 2) and saver.pending is None
    assert read_manifest(store, f"{KEY}/{tag_for(2)}") == {"step": 2, "world_size": 1, "zero_stage": 2,
                                                           "history": [{"loss": 1.0}]}, "the state at the save"
    assert not (tmp_path / "scratch" / tag_for(2)).exists(), "the uploaded staging copy is removed"
    assert set(saver.held_s) == {tag_for(2)}


def test_the_next_save_and_the_end_wait_for_the_upload_and_log_the_wait(tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    saver = saver_for(tmp_path, store, asynchronous=True)
    saver.save(step=2, train_state={"step": 2})
    opener = threading.Timer(0.05, store.gate.set)  # opens the gate while the next save waits for the upload
    opener.start()
    with caplog.at_level(logging.INFO, logger="ito_core.checkpoint"):
        saver.save(step=4, train_state={"step": 4})
        assert is_committed(store, 2) and not is_committed(store, 4), "at most one upload in flight"
        saver.finish()
    opener.join()
    assert is_committed(store, 4), "the last checkpoint is committed before the run ends"
    waits = [r.getMessage() for r in caplog.records if "waited" in r.getMessage()]
    assert len(waits) == 2 and f"before saving {tag_for(4)}" in waits[0] and "the end of training" in waits[1]


def test_synchronous_save_commits_before_it_returns(tmp_path: Path) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    store.gate.set()
    saver = saver_for(tmp_path, store, asynchronous=False)
    saver.save(step=2, train_state={"step": 2})
    assert is_committed(store, 2) and saver.pending is None


def test_a_local_store_commits_in_the_save_whatever_the_switch(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    saver = saver_for(tmp_path, store, asynchronous=True)
    saver.save(step=2, train_state={"step": 2})
    assert is_committed(store, 2) and not (tmp_path / "scratch").exists(), "written in the store itself"


def test_a_failed_upload_fails_the_step_that_learns_of_it_and_commits_nothing(tmp_path: Path) -> None:
    store = GatedRemoteStore(tmp_path / "store", fail=True)
    saver = saver_for(tmp_path, store, asynchronous=True)
    saver.save(step=2, train_state={"step": 2})
    store.gate.set()
    saver.pending.upload.wait()
    with pytest.raises(StorageError, match="S3 endpoint kept failing"):
        saver.poll()
    assert not is_committed(store, 2)


def test_background_upload_keeps_its_error_for_the_training_thread() -> None:
    def boom() -> None:
        raise OSError("connection reset")

    failed, sent = BackgroundUpload("upload of x", boom), BackgroundUpload("upload of y", lambda: None)
    assert failed.wait()[0] is False and isinstance(failed.error, OSError) and failed.done()
    assert sent.wait()[0] is True and sent.error is None and sent.seconds >= 0
