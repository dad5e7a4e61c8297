"""SLURM job states for every job this process waits for, at a cost that does not grow with their number.

Each waiting task used to poll its own job (``squeue``, then ``sacct``) every 3 s: 100 running points made about
2,000 scheduler calls a minute against one slurmctld. Now the flow process holds one ``SlurmWatcher``: whichever
waiting thread finds its snapshot older than ``interval_s`` refreshes it for all registered jobs with one ``squeue``,
and one ``sacct`` for the jobs squeue no longer lists or whose state changed (its per-attempt rows name the nodes
of each NODE_FAIL). submitit's ``SlurmInfoWatcher`` shares one ``sacct`` per interval across its jobs the same way.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# SLURM job states after which no task will write a result (PENDING/RUNNING/REQUEUED/... are alive).
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
GONE = "GONE"  # neither squeue nor sacct knows the job any more

Runner = Callable[[list[str]], "subprocess.CompletedProcess[str] | None"]


def run_command(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    """``command``'s output, or None when it could not run or hung (a controller that does not answer)."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


@dataclass
class JobInfo:
    """What the scheduler said about one job: its state (``GONE``; None = unsure) and the nodes of each attempt
    that ended in NODE_FAIL (``sacct -D`` keeps every attempt of a requeued job)."""

    state: str | None = None
    node_failures: list[str] = field(default_factory=list)


def query(job_ids: Iterable[str], *, previous: Mapping[str, JobInfo] | None = None,
          run: Runner = run_command) -> dict[str, JobInfo]:
    """One ``squeue`` for all ``job_ids``, then one ``sacct`` for those squeue does not list and those whose
    state is new since ``previous`` (a state change may come with a node failure)."""
    ids, previous = sorted(set(job_ids)), previous or {}
    if not ids:
        return {}
    # -r: one line per array task (else pending tasks share one "123_[1-3]" line)
    queue = run(["squeue", "-r", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T"])
    listed = {job_id: rows[-1].split()[0] for job_id, rows in _rows(queue.stdout).items()} \
        if queue is not None and queue.returncode == 0 else {}
    # Several ids: squeue leaves out the ones it forgot. One id: it fails with "Invalid job id" instead.
    forgot = queue is not None and (queue.returncode == 0 or "Invalid job id" in queue.stderr)
    infos = {job_id: JobInfo(listed.get(job_id), list(previous[job_id].node_failures) if job_id in previous else [])
             for job_id in ids}
    ask = [job_id for job_id in ids
           if job_id not in listed or job_id not in previous or previous[job_id].state != listed[job_id]]
    acct = run(["sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State,NodeList", "-j", ",".join(ask)]) if ask else None
    if acct is None or acct.returncode != 0:  # no accounting, or no answer: squeue's word only
        for job_id in ask:
            if job_id not in listed:
                infos[job_id].state = GONE if forgot else None
        return infos
    attempts = _rows(acct.stdout)
    for job_id in ask:
        rows = [row.partition("|")[::2] for row in attempts.get(job_id, [])]
        infos[job_id].node_failures = [nodes for state, nodes in rows if state.startswith("NODE_FAIL")]
        if job_id not in listed:  # the newest attempt's state ("CANCELLED by 0" -> CANCELLED)
            infos[job_id].state = rows[-1][0].split()[0] if rows else (GONE if forgot else None)
    return infos


def _rows(text: str) -> dict[str, list[str]]:
    """``id|rest`` lines grouped by id, in order (sacct -D: one per attempt, oldest first)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        job_id, sep, rest = line.strip().partition("|")
        if sep:
            rows.setdefault(job_id, []).append(rest)
    return rows


def slurm_state(job_id: str, *, run: Runner = run_command) -> str | None:
    """The job's SLURM state (``CANCELLED``, ...), ``GONE`` if the scheduler no longer knows it, None if unsure."""
    return query([job_id], run=run)[job_id].state


def node_failures(job_id: str, *, run: Runner = run_command) -> list[str]:
    """The nodes of each of the job's attempts that ended in NODE_FAIL."""
    return query([job_id], run=run)[job_id].node_failures


class SlurmWatcher:
    """The flow process's view of its SLURM jobs, refreshed by one query per ``interval_s`` for all of them.

    Thread-safe: waiting tasks run in Prefect's worker threads; the first to find the snapshot stale refreshes
    it while the others wait on the lock and then read the fresh one.
    """

    def __init__(self, *, interval_s: float = 3.0, run: Runner = run_command,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s, self._run, self._clock = interval_s, run, clock
        self._lock = threading.Lock()
        self._jobs: dict[str, int] = {}  # job id -> how many waiters registered it
        self._infos: dict[str, JobInfo] = {}
        self._checked_at = float("-inf")

    def register(self, job_id: str) -> None:
        with self._lock:
            # its first state comes with the next refresh, at most interval_s away: a burst of submissions
            # must not refresh once per job
            self._jobs[job_id] = self._jobs.get(job_id, 0) + 1

    def unregister(self, job_id: str) -> None:
        with self._lock:
            if self._jobs.get(job_id, 0) <= 1:
                self._jobs.pop(job_id, None)
                self._infos.pop(job_id, None)
            else:
                self._jobs[job_id] -= 1

    def info(self, job_id: str, *, fresh: bool = False) -> JobInfo:
        """The job's state as of the last refresh at most ``interval_s`` ago (``fresh``: refreshed now); unknown
        (state None) for a job registered since."""
        with self._lock:
            if job_id not in self._jobs:
                raise KeyError(f"job {job_id} is not registered with the SLURM watcher")
            if fresh or self._clock() - self._checked_at >= self.interval_s:
                self._refresh()
            return self._infos.get(job_id, JobInfo())

    def _refresh(self) -> None:
        self._infos = query(self._jobs, previous=self._infos, run=self._run)
        self._checked_at = self._clock()
