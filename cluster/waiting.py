"""Wait for a submitit job while forwarding its rank-0 log lines (per-step progress) to a logger.

A job that ends without a result (``scancel``, node failure, out of memory, a rank that crashed) is
raised as ``JobFailedError`` with the tail of rank 0's log, never waited on forever. SLURM jobs are
judged by their result files plus ``squeue`` (``sacct`` once the controller forgot the job), not by
submitit's own ``sacct`` polling, which backs off to minutes and without accounting reports UNKNOWN
forever. A preempted or timed-out job that submitit requeued goes back to PENDING and is waited on.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

# SLURM job states after which no task will write a result (PENDING/RUNNING/REQUEUED/... are alive).
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
GONE = "GONE"  # neither squeue nor sacct knows the job any more
TAIL_LINES = 40


class JobFailedError(RuntimeError):
    """The job ended without a result; ``log_tail`` holds the last lines of rank 0's log."""

    def __init__(self, job_id: str, problem: str, log_tail: str) -> None:
        super().__init__(f"job {job_id} {problem}\n--- last lines of rank 0's log ---\n{log_tail}")
        self.job_id, self.problem, self.log_tail = job_id, problem, log_tail


def slurm_state(job_id: str) -> str | None:
    """The job's SLURM state (``CANCELLED``, ...), ``GONE`` if the scheduler no longer knows it, None if unsure."""
    queue = _run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"])
    if queue is not None and queue.stdout.strip():
        return queue.stdout.split()[0]
    acct = _run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id])
    if acct is not None and acct.returncode == 0 and acct.stdout.strip():
        return acct.stdout.strip().splitlines()[-1].split()[0]  # "CANCELLED by 0" -> CANCELLED
    known_gone = queue is not None and "Invalid job id" in queue.stderr
    return GONE if known_gone else None


def _run(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def log_tail(job: submitit.Job, lines: int = TAIL_LINES) -> str:
    """Last lines of rank 0's stderr (stdout if stderr is empty)."""
    paths = job.task(0).paths
    for path in (Path(paths.stderr), Path(paths.stdout)):
        if path.exists() and path.stat().st_size:
            with path.open("r", errors="replace") as handle:
                return "".join(handle.readlines()[-lines:]).rstrip("\n")
    return f"(no log written: {paths.stderr})"


def _new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines appended to ``path`` since byte ``offset``, and the new offset."""
    if not path.exists():
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        chunk = handle.read()
    end = chunk.rfind(b"\n") + 1
    return chunk[:end].decode(errors="replace").splitlines(), offset + end


class _Liveness:
    """Client-side guard: a SLURM job that stays ended (or unknown to the scheduler) without results fails."""

    def __init__(self, job: submitit.Job, logger: Any, *, every_s: float, grace_s: float) -> None:
        self.job, self.logger, self.every_s, self.grace_s = job, logger, every_s, grace_s
        self.state: str | None = None
        self.checked_at, self.ended_at = float("-inf"), None

    @property
    def ended(self) -> bool:
        """SLURM says the job is over (also True when it can't tell)."""
        return self.state is None or self.state in ENDED_STATES or self.state == GONE

    def check(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if now - self.checked_at < self.every_s and not force:
            return
        self.checked_at, state = now, slurm_state(self.job.job_id)
        if state is not None and state != self.state:
            self.logger.info("[job %s] SLURM state %s", self.job.job_id, state)
            self.state = state
        if state is None:
            return
        if not self.ended:
            self.ended_at = None
        elif self.ended_at is None:
            self.ended_at = now
        # Tasks write results before they exit; the grace covers shared filesystems that show files late.
        elif now - self.ended_at >= self.grace_s * (6 if state == "COMPLETED" else 1):
            raise _failure(self.job, f"ended without a result (SLURM state {state})")


def _has_results(job: submitit.Job) -> bool:
    with contextlib.suppress(OSError):  # refresh an NFS directory cache, as submitit does
        folder = Path(job.paths.folder)
        folder.chmod(folder.stat().st_mode)
    return all(Path(job.task(i).paths.result_pickle).exists() for i in range(job.num_tasks))


def _failed_task(job: submitit.Job) -> Exception | None:
    """The error of the rank that failed first (the root cause; the others fail because it went away)."""
    failed = []
    for index in range(job.num_tasks):
        task = job.task(index)
        path = Path(task.paths.result_pickle)
        if path.exists() and (error := task.exception()) is not None:
            failed.append((path.stat().st_mtime, index, error))
    return min(failed, key=lambda item: item[:2])[2] if failed else None


def _failure(job: submitit.Job, problem: str) -> JobFailedError:
    cause = _failed_task(job)
    return JobFailedError(job.job_id, f"{problem}:\n{cause}" if cause else problem, log_tail(job))


def wait_streaming(job: submitit.Job, logger: logging.Logger | Any, *, poll_s: float = 1.0,
                   pattern: str = "ito_core", liveness_s: float = 3.0, grace_s: float = 10.0) -> Any:
    """Block until ``job`` ends and return rank 0's result; log rank 0's stderr lines containing ``pattern``.

    Raises ``JobFailedError`` (with the log tail) when the job ends without a result: a failed rank, a
    cancelled job, a node failure, ... A job that submitit requeued (preemption, time-out) is waited on.
    SLURM jobs are judged by their result files and ``squeue``/``sacct`` (checked every ``liveness_s``),
    not by submitit's ``sacct`` polling, which backs off to minutes and needs accounting.
    """
    slurm = isinstance(job, submitit.SlurmJob)
    offset, watch = 0, _Liveness(job, logger, every_s=liveness_s, grace_s=grace_s)
    stderr = Path(job.task(0).paths.stderr)  # a multi-task job's own paths name no task
    while True:
        done = _has_results(job) if slurm else job.done()
        lines, offset = _new_lines(stderr, offset)
        for line in lines:
            if pattern in line:
                logger.info("[job %s] %s", job.job_id, line.split(": ", 1)[-1])
        if done:
            try:
                return job.results()[0]  # rank 0's result (a multi-task job returns one per task)
            except (FailedJobError, UncompletedJobError) as err:
                # A rank's error from before a requeue stays on disk until that rank finishes again:
                # on SLURM it only counts once the scheduler says the job is over.
                if slurm:
                    watch.check(force=True)
                if not slurm or watch.ended:
                    raise _failure(job, f"failed (state {watch.state or job.state})") from err
        if slurm:
            watch.check()
        time.sleep(poll_s)
