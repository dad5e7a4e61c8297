"""When a checkpoint is committed: with a remote store, only once its upload ended; asynchronously, training goes on
meanwhile and a later step (or the next save, or the end) commits it; a failed upload commits nothing and fails every
rank. Asynchronously the save only snapshots the state: the file is written later, from a true copy. One gloo rank,
a fake engine (it saves one file through DeepSpeed's checkpoint engine), an engine whose writes and a store whose
uploads wait for gates the test opens."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from fixtures.tiny_run import one_rank_group

from ito_core.artifacts import committed, read_manifest
from ito_core.checkpoint import CheckpointSaver, tag_for
from ito_core.checkpoint_upload import BackgroundTransfer
from ito_core.storage import LocalStore, StorageError

KEY = "runs/r/checkpoints"


@pytest.fixture(scope="module", autouse=True)
def one_rank() -> Iterator[None]:
    with one_rank_group():  # the session's one gloo rank, which an earlier in-process engine may have made
        yield


class GatedTorchEngine(TorchCheckpointEngine):
    """DeepSpeed's own engine; each write waits for ``gate`` (open unless a test closes it)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def save(self, state_dict: dict, path: str) -> None:
        assert self.gate.wait(30), "the test never opened the write gate"
        super().save(state_dict, path)


class FakeEngine:
    """Saves like DeepSpeed: the folder, then the state through ``checkpoint_engine``."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.module = torch.nn.Linear(2, 2)
        self.checkpoint_engine = GatedTorchEngine()

    def zero_optimization_stage(self) -> int:
        return 2

    def save_checkpoint(self, save_dir: str, *, tag: str, client_state: dict, save_latest: bool) -> None:
        assert not save_latest
        self.checkpoint_engine.makedirs(str(Path(save_dir) / tag))
        state = {"module": self.module.state_dict(), **client_state}
        self.checkpoint_engine.save(state, str(Path(save_dir) / tag / "mp_rank_00_model_states.pt"))


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


def written(saver: CheckpointSaver) -> None:
    """Wait for the background write of the pending tag and poll: the upload starts (an earlier poll may have)."""
    if saver.pending.write is not None:
        saver.pending.write.wait()
        saver.poll()
    assert saver.pending.write is None


def test_async_save_returns_before_the_upload_and_a_later_step_commits(tmp_path: Path) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    saver, state = saver_for(tmp_path, store, asynchronous=True), {"step": 2, "history": [{"loss": 1.0}]}
    saver.save(step=2, train_state=state)
    state["history"].append({"loss": 0.5})  # training goes on changing its state while the upload runs
    saver.poll()
    written(saver)
    assert not is_committed(store, 2), "committed before its upload ended"
    assert (tmp_path / "scratch" / tag_for(2) / "mp_rank_00_model_states.pt").is_file()

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
    uploads = [w for w in waits if "uploaded in" in w]
    assert len(uploads) == 2 and f"before saving {tag_for(4)}" in uploads[0] and "the end of training" in uploads[1]


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
    written(saver)
    store.gate.set()
    saver.pending.upload.wait()
    with pytest.raises(StorageError, match="S3 endpoint kept failing"):
        saver.poll()
    assert not is_committed(store, 2)


def test_the_file_holds_the_state_at_the_save_though_training_changed_it_before_the_write(tmp_path: Path) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    store.gate.set()
    saver = saver_for(tmp_path, store, asynchronous=True)
    engine, state = saver.engine, {"step": 2, "history": [{"loss": 1.0}]}
    engine.checkpoint_engine.inner.gate.clear()  # the write waits until training changed the weights in place
    at_save = {name: tensor.clone() for name, tensor in engine.module.state_dict().items()}
    saver.save(step=2, train_state=state)
    with torch.no_grad():
        engine.module.weight.add_(1.0)
        engine.module.bias.mul_(-3.0)
    state["history"].append({"loss": 0.5})
    assert not (tmp_path / "scratch" / tag_for(2) / "mp_rank_00_model_states.pt").exists(), "written in the save"
    engine.checkpoint_engine.inner.gate.set()
    saver.finish()
    saved = torch.load(tmp_path / "store" / KEY / tag_for(2) / "mp_rank_00_model_states.pt", weights_only=False)
    assert saved["train_state"] == {"step": 2, "history": [{"loss": 1.0}]}
    assert saved["module"].keys() == at_save.keys()
    assert all(torch.equal(saved["module"][name], at_save[name]) for name in at_save), "not the state at the save"


def test_a_failed_write_fails_the_step_that_learns_of_it_and_commits_nothing(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    store.gate.set()
    saver = saver_for(tmp_path, store, asynchronous=True)

    def no_space(state_dict: dict, path: str) -> None:
        raise OSError("[Errno 5] Input/output error")

    monkeypatch.setattr(saver.engine.checkpoint_engine.inner, "save", no_space)
    saver.save(step=2, train_state={"step": 2})
    saver.pending.write.wait()
    with pytest.raises(OSError, match="Input/output error"):
        saver.poll()
    assert not is_committed(store, 2) and saver.pending is None


def test_synchronous_saves_write_in_the_save_call(tmp_path: Path) -> None:
    store = GatedRemoteStore(tmp_path / "store")
    store.gate.set()
    saver = saver_for(tmp_path, store, asynchronous=False)
    assert isinstance(saver.engine.checkpoint_engine, GatedTorchEngine), "no snapshot engine when synchronous"


def test_background_upload_keeps_its_error_for_the_training_thread() -> None:
    def boom() -> None:
        raise OSError("connection reset")

    failed, sent = BackgroundTransfer("upload of x", boom), BackgroundTransfer("upload of y", lambda: None)
    assert failed.wait()[0] is False and isinstance(failed.error, OSError) and failed.done()
    assert sent.wait()[0] is True and sent.error is None and sent.seconds >= 0
