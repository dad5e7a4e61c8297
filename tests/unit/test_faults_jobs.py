"""Pieces of the fault handling that need no cluster: finding a job again after its waiter died, naming
why a job ended without a result, pruning partial checkpoints, telling a full disk from other errors."""

from __future__ import annotations

import errno
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import submitit
from fixtures.tiny_run import tiny_config

from cluster import jobs, waiting
from cluster.executors import slurm
from cluster.slurm_watch import GONE, SlurmWatcher, node_failures
from cluster.waiting import JOB_RECORD, record_job, running_job
from flows import stages
from ito_core.checkpoint import prune, tag_for
from ito_core.storage import LocalStore, commit, disk_full_error


@dataclass
class _Paths:
    folder: Path


@dataclass
class _Submitted:
    """What ``record_job`` reads of a submitit job."""

    job_id: str
    num_tasks: int
    paths: _Paths


def _controller(folder: Path) -> subprocess.Popen:
    """A process whose command line looks like submitit's local controller for ``folder``."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit.local._local",
                             str(folder)])
    deadline = time.monotonic() + 10
    while b"submitit.local._local" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():  # exec may lag Popen
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return proc


def test_a_local_job_left_running_is_found_again_until_it_ends(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    try:
        record_job(_Submitted(str(controller.pid), 2, _Paths(tmp_path)), "local")
        job = running_job(tmp_path)
        assert isinstance(job, submitit.LocalJob) and job.job_id == str(controller.pid) and job.num_tasks == 2
        assert not job.done()
    finally:
        controller.kill()
        controller.wait()
    assert job.done() and running_job(tmp_path) is None


def test_an_unrelated_process_with_the_same_pid_is_not_taken_for_the_job(tmp_path: Path) -> None:
    other = _controller(tmp_path / "another-run")
    try:
        record_job(_Submitted(str(other.pid), 1, _Paths(tmp_path)), "local")
        assert running_job(tmp_path) is None
    finally:
        other.kill()
        other.wait()


def test_a_zombie_controller_counts_as_ended(tmp_path: Path) -> None:
    controller = _controller(tmp_path)
    controller.kill()  # not reaped yet: a zombie, as when its waiter died
    while " Z " not in Path(f"/proc/{controller.pid}/stat").read_text():
        time.sleep(0.01)
    try:
        record_job(_Submitted(str(controller.pid), 1, _Paths(tmp_path)), "local")
        assert running_job(tmp_path) is None
    finally:
        controller.wait()


def test_a_rerun_waits_for_the_eval_job_left_running_unless_its_eval_settings_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, key = tiny_config(tmp_path, "eval.executor=job"), "runs/abc"
    folder = jobs.work_dir(cfg, key) / jobs.EVAL_JOBS
    folder.mkdir(parents=True)
    controller = _controller(folder)
    submitted = []

    class Executor:  # submits "the job" run by the controller above
        def submit(self, *args: object, **kwargs: object) -> _Submitted:
            submitted.append(args)
            return _Submitted(str(controller.pid), 1, _Paths(folder))

    monkeypatch.setattr(jobs, "build_executor", lambda *args, **kwargs: Executor())
    monkeypatch.setattr(stages, "wait_streaming", lambda job, logger, **_: [{"waited_for": job.job_id}])
    try:
        for _ in range(2):  # the first flow run dies waiting; the rerun finds its job still running
            assert stages.eval_task.fn(cfg, {}, key) == [{"waited_for": str(controller.pid)}]
        assert len(submitted) == 1, "the rerun waited for the running eval job instead of submitting another"
        stages.eval_task.fn(tiny_config(tmp_path, "eval.executor=job", "eval.umap_points=0"), {}, key)
        assert len(submitted) == 2, "a job evaluating other settings has other records: not waited for"
    finally:
        controller.kill()
        controller.wait()


def test_a_slurm_job_is_found_again_while_the_scheduler_runs_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / JOB_RECORD).write_text(json.dumps({"job_id": "42", "kind": "slurm", "num_tasks": 4}))
    for state, found in (("PENDING", True), ("RUNNING", True), ("REQUEUED", True), ("COMPLETED", False),
                         ("CANCELLED", False), (GONE, False), (None, False)):
        monkeypatch.setattr(slurm, "slurm_state", lambda job_id, s=state: s)
        job = running_job(tmp_path)
        assert (job is not None) == found, state
        assert job is None or (isinstance(job, submitit.SlurmJob) and job.num_tasks == 4)
    assert running_job(tmp_path / "never-submitted") is None


@pytest.mark.parametrize(("tail", "cause", "hint"), [
    ("slurmstepd-vm: error: StepId=56.0 exceeded memory limit (1129099264 > 1073741824), being killed", None,
     "out of memory"),
    ("srun: error: vm: task 1: Out Of Memory", None, "out of memory"),
    ("step 3/60", RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
    ("step 3/60", None, "killed from outside by a signal"),
    ("step 3/60", ValueError("a real bug"), ""),
])
def test_why_a_job_ended_is_named(tail: str, cause: Exception | None, hint: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(waiting, "log_tail", lambda job: tail)
    monkeypatch.setattr(waiting, "_failed_task", lambda job: cause)
    error = waiting._failure(_Submitted("7", 2, _Paths(Path("."))), "ended without a result (SLURM state FAILED)")
    message = str(error)
    assert message.startswith("job 7 ended without a result (SLURM state FAILED)") and tail in message
    if hint == "out of memory":
        assert "out of memory" in message and "train.micro_batch_size" in message and "cluster.mem_gb" in message
    elif hint:
        assert hint in message and "scancel" in message
    else:
        assert " -- " not in message and "a real bug" in message, "a rank's own error needs no guess"


@pytest.mark.parametrize(("stage", "effect"), [
    ("train", "training resumes from its last committed checkpoint"),
    ("eval", "the eval starts over (its metrics commit only once all its sets are scored)"),
    ("prep", "prep starts over and skips what it already committed"),
])
def test_a_node_failure_is_named_once_with_what_its_stage_redoes(monkeypatch: pytest.MonkeyPatch, stage: str,
                                                                 effect: str) -> None:
    """sacct -D keeps every attempt: each NODE_FAIL is logged once while SLURM requeues the job, saying what the
    job's stage redoes, and a job that was not requeued fails naming the nodes."""
    answer = subprocess.CompletedProcess([], 0, stdout="9|NODE_FAIL|mn[1-2]\n9|RUNNING|mn[3-4]\n")
    fake = lambda command: answer if command[0] == "sacct" else subprocess.CompletedProcess([], 1, "", "")  # noqa: E731
    assert node_failures("9", run=fake) == ["mn[1-2]"]
    lines: list[str] = []

    class Logger:
        def warning(self, message: str, *args: object) -> None:
            lines.append(message % args)

    watch = slurm.SlurmLiveness(_Submitted("9", 2, _Paths(Path("."))), logging.getLogger("t"), 0,
                                watcher=SlurmWatcher(interval_s=0, run=fake))
    reported = 0
    for _ in range(2):
        watch.check()
        reported = waiting.report_node_failures("9", watch.failed_nodes, reported, Logger(), stage=stage)
    watch.close()
    assert lines == [f"[job 9] node failure on mn[1-2] (NODE_FAIL): SLURM requeues the job; {effect}"]
    monkeypatch.setattr(waiting, "log_tail", lambda job: "step 5/30")
    monkeypatch.setattr(waiting, "_failed_task", lambda job: None)
    error = str(waiting._failure(_Submitted("9", 2, _Paths(Path("."))), "ended without a result (SLURM state "
                                 "NODE_FAIL)", failed_nodes=watch.failed_nodes, stage=stage))
    assert f"node failure on mn[1-2], and SLURM did not requeue the job (JobRequeue=0 or --no-requeue): rerun the " \
           f"point; {effect}" in error


def test_prune_keeps_the_newest_commits_and_drops_older_partial_tags(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for step in (2, 4, 6, 8, 10):
        (tmp_path / "ck" / tag_for(step)).mkdir(parents=True)
    for step in (2, 6, 8):  # 4: killed mid-save, 10: still being written
        commit(store, f"ck/{tag_for(step)}", {"step": step})
    prune(store, "ck", keep=2)
    assert store.list_dirs("ck") == [tag_for(6), tag_for(8), tag_for(10)]


def test_a_full_disk_is_told_from_other_write_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    enospc = OSError(errno.ENOSPC, "No space left on device")
    full = disk_full_error(enospc, tmp_path / "a" / "b", what="checkpoint x", fix="Free space.")
    assert isinstance(full, OSError) and full.errno == errno.ENOSPC
    assert f"writing checkpoint x under {tmp_path / 'a' / 'b'}" in str(full) and str(full).endswith("Free space.")
    torch_style = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 33536 vs 33440")
    assert disk_full_error(torch_style, tmp_path, what="x", fix="") is None, "plenty of space: not a full disk"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 20, 10 << 20, 1 << 20))
    assert disk_full_error(torch_style, tmp_path, what="x", fix="") is not None, "torch's errno-less error, 1 MiB free"
    assert disk_full_error(PermissionError(errno.EACCES, "denied"), tmp_path, what="x", fix="") is None, \
        "an error that names its own cause is not second-guessed"
    quota = OSError(errno.EDQUOT, "Disk quota exceeded")
    assert disk_full_error(quota, tmp_path, what="x", fix="") is not None
