"""``sbatch`` that an overloaded controller survives: throttled, retried on transient errors, never twice.

A sweep submits a burst of jobs at once; a busy slurmctld then answers some with "Socket timed out on send/recv
operation". Such a timed-out ``sbatch`` may still have queued the job, so a retry first looks for it: each
submission's script has a unique path (submitit names it by a fresh uuid), which ``squeue``'s command column
(``%o``) shows, so one ``squeue`` finds a job the failed call queued, and it is adopted instead of submitted again.
If that lookup gets no answer either, nothing is submitted until it does.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import tenacity
from submitit.core.utils import FailedSubmissionError

log = logging.getLogger(__name__)

# What slurm clients print when the controller is busy, restarting or unreachable (sbatch exits 1 for all of them).
TRANSIENT = re.compile(r"Socket timed out|Unable to contact slurm controller|Resource temporarily unavailable|"
                       r"Zero Bytes were transmitted|Connection (refused|reset)|Transport endpoint|"
                       r"slurm_receive_msg|Slurm temporarily unable|try again later", re.IGNORECASE)
SUBMITTED = re.compile(r"Submitted batch job (\d+)")
TIMEOUT_S = 60  # one sbatch call; a longer hang counts as a transient failure


class TransientSubmitError(RuntimeError):
    """sbatch (or the lookup before a retry) failed in a way that a later try may not."""


class Throttle:
    """At most ``rate_per_s`` submissions a second from this process, across all threads and executors."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock, self._sleep, self._lock = clock, sleep, threading.Lock()
        self._next_at = float("-inf")

    def wait(self, rate_per_s: float) -> None:
        with self._lock:
            now = self._clock()
            start = max(now, self._next_at)
            self._next_at = start + 1.0 / rate_per_s
        if start > now:
            self._sleep(start - now)


THROTTLE = Throttle()


def _call(command: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as err:
        raise TransientSubmitError(f"{command[0]} did not answer within {TIMEOUT_S} s") from err


def queued_with(script: Path, *, call: Callable[[list[str]], subprocess.CompletedProcess[str]] = _call) -> list[str]:
    """Ids of this user's jobs that were submitted with ``script`` (oldest first). One squeue call."""
    out = call(["squeue", "--me", "-h", "-t", "all", "-o", "%F|%o"])  # %F: an array's own id, as sbatch prints
    if out.returncode != 0:
        raise TransientSubmitError(f"cannot tell whether an earlier sbatch queued the job (squeue: "
                                   f"{out.stderr.strip()})")
    ids = {job_id for job_id, _, command in (line.partition("|") for line in out.stdout.splitlines())
           if command.strip() == str(script)}
    return sorted(ids, key=int)


def submit_script(script: Path, *, rate_per_s: float, retry_s: float,
                  call: Callable[[list[str]], subprocess.CompletedProcess[str]] = _call,
                  throttle: Throttle = THROTTLE, sleep: Callable[[float], None] = time.sleep) -> str:
    """Submit ``script`` once and return its job id, retrying transient failures for up to ``retry_s`` seconds."""
    unsure = False  # an earlier try may have queued the job

    def attempt() -> str:
        nonlocal unsure
        if unsure and (found := queued_with(script, call=call)):
            log.warning("sbatch %s: an earlier try that failed had queued job %s; adopting it", script, found[0])
            return found[0]
        throttle.wait(rate_per_s)
        try:
            out = call(["sbatch", str(script)])
        except TransientSubmitError:
            unsure = True  # it hung: the controller may have queued the job
            raise
        if out.returncode == 0 and (match := SUBMITTED.search(out.stdout)):
            return match.group(1)
        if TRANSIENT.search(out.stderr):
            unsure = True  # a time-out may come after the controller queued the job
            raise TransientSubmitError(out.stderr.strip())
        raise FailedSubmissionError(f"sbatch {script} failed (exit {out.returncode}): "
                                    f"{(out.stderr or out.stdout).strip()}")

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientSubmitError), reraise=True, sleep=sleep,
        stop=tenacity.stop_after_delay(retry_s), wait=tenacity.wait_exponential_jitter(initial=1, max=30),
        before_sleep=lambda state: log.warning("sbatch %s: %s; retrying (try %d)", script, state.outcome.exception(),
                                               state.attempt_number + 1))
    job_id = retrying(attempt)
    if unsure:
        job_id = _without_duplicates(script, job_id, call=call)
    return job_id


def _without_duplicates(script: Path, job_id: str, *, call: Callable[[list[str]], subprocess.CompletedProcess[str]],
                        ) -> str:
    """After a failed try, the controller may still queue that try's job later than a retry's lookup ran: keep
    the oldest job of this script and cancel the others, so a point never trains twice."""
    try:
        found = queued_with(script, call=call)
    except TransientSubmitError:
        return job_id
    for extra in found[1:]:
        log.warning("sbatch %s: jobs %s were both queued by one submission; cancelling %s", script,
                    ", ".join(found), extra)
        call(["scancel", extra])
    return found[0] if found else job_id
