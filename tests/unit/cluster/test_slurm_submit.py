"""sbatch against an overloaded controller (faked): throttled, retried on transient errors only, and a job that a
failed try queued is adopted, never submitted a second time."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from submitit.core.utils import FailedSubmissionError

from cluster.slurm_submit import Throttle, TransientSubmitError, submit_script

TIMED_OUT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"


class FakeController:
    """``sbatch``/``squeue``/``scancel`` against a queue. ``faults``: per sbatch call, None (works), "fail" (refused
    with a time-out) or "queued" (queues the job, then reports a time-out, as an overloaded slurmctld can)."""

    def __init__(self, faults: list[str | None], *, squeue_down: int = 0, error: str = TIMED_OUT) -> None:
        self.faults, self.squeue_down, self.error = list(faults), squeue_down, error
        self.queue: dict[str, str] = {}  # job id -> script
        self.calls: list[str] = []

    def __call__(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(command[0])
        if command[0] == "squeue":
            if self.squeue_down:
                self.squeue_down -= 1
                return subprocess.CompletedProcess(command, 1, "", "Unable to contact slurm controller")
            return subprocess.CompletedProcess(command, 0, "".join(f"{i}|{s}\n" for i, s in self.queue.items()), "")
        if command[0] == "scancel":
            self.queue.pop(command[1])
            return subprocess.CompletedProcess(command, 0, "", "")
        fault = self.faults.pop(0) if self.faults else None
        if fault != "fail":
            job_id = str(100 + len(self.queue))
            self.queue[job_id] = command[1]
        if fault is None:
            return subprocess.CompletedProcess(command, 0, f"Submitted batch job {job_id}\n", "")
        return subprocess.CompletedProcess(command, 1, "", self.error)


def _submit(controller: FakeController, script: Path, **kw: object) -> str:
    return submit_script(script, rate_per_s=1000, retry_s=60, call=controller, throttle=Throttle(sleep=lambda s: None),
                         sleep=lambda s: None, **kw)


def test_a_healthy_controller_gets_one_sbatch_and_nothing_else(tmp_path: Path) -> None:
    controller = FakeController([])
    assert _submit(controller, tmp_path / "a.sh") == "100" and controller.calls == ["sbatch"]


def test_refused_submissions_are_retried(tmp_path: Path) -> None:
    controller = FakeController(["fail", "fail", None])
    assert _submit(controller, tmp_path / "a.sh") == "100"
    # looked up before each retry, and once after for a job a failed try queued late
    assert controller.calls == ["sbatch", "squeue", "sbatch", "squeue", "sbatch", "squeue"]
    assert list(controller.queue) == ["100"]


def test_a_job_a_timed_out_sbatch_queued_is_adopted_not_submitted_again(tmp_path: Path) -> None:
    other = FakeController([])
    _submit(other, tmp_path / "other.sh")
    controller = FakeController(["queued"])
    controller.queue = dict(other.queue)  # another point's job is in the queue too
    assert _submit(controller, tmp_path / "a.sh") == "101"
    assert controller.calls == ["sbatch", "squeue", "squeue"] and len(controller.queue) == 2


def test_no_sbatch_while_the_lookup_gets_no_answer(tmp_path: Path) -> None:
    controller = FakeController(["queued"], squeue_down=2)
    assert _submit(controller, tmp_path / "a.sh") == "100"
    assert controller.calls.count("sbatch") == 1 and list(controller.queue) == ["100"]


def test_a_job_queued_after_the_lookup_is_cancelled_as_a_duplicate(tmp_path: Path) -> None:
    """The failed try's job reaches the queue only after the retry's lookup: the retry's own job is cancelled."""
    controller = FakeController(["fail", None])
    late = {"done": False}

    def call(command: list[str]) -> subprocess.CompletedProcess[str]:
        answer = controller(command)
        if command[0] == "sbatch" and not late["done"]:  # the first (refused) try lands later than reported
            late["done"] = True
            controller.queue["99"] = command[1]
        return answer

    assert submit_script(tmp_path / "a.sh", rate_per_s=1000, retry_s=60, call=call,
                         throttle=Throttle(sleep=lambda s: None), sleep=lambda s: None) == "99"
    assert list(controller.queue) == ["99"], "the duplicate was cancelled"


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    controller = FakeController(["fail"], error="sbatch: error: Invalid partition name specified")
    with pytest.raises(FailedSubmissionError, match="Invalid partition name"):
        _submit(controller, tmp_path / "a.sh")
    assert controller.calls == ["sbatch"]


def test_retries_stop_at_the_deadline(tmp_path: Path) -> None:
    controller = FakeController(["fail"] * 3)
    with pytest.raises(TransientSubmitError, match="Socket timed out"):
        submit_script(tmp_path / "a.sh", rate_per_s=1000, retry_s=0, call=controller,
                      throttle=Throttle(sleep=lambda s: None), sleep=lambda s: None)
    assert controller.calls == ["sbatch"]


def test_the_throttle_spaces_submissions_at_the_rate() -> None:
    now, slept = [0.0], []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        throttle.wait(2.0)
    assert slept == [0.5] * 4 and now[0] == 2.0
    now[0] += 10  # idle for a while: the next one goes at once
    throttle.wait(2.0)
    assert slept == [0.5] * 4
