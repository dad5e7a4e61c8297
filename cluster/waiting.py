"""Wait for a submitit job while forwarding its rank-0 log lines (per-step progress) to a logger.

A job that ends without a result (``scancel``, node failure, out of memory, a rank that crashed) is
raised as ``JobFailedError`` with the tail of rank 0's log, never waited on forever; out of memory
(SLURM's limit, the kernel's OOM killer, CUDA) and ranks killed from outside are named with the fix.
SLURM jobs are judged by their result files plus ``squeue`` (``sacct`` once the controller forgot the
job), not by submitit's own ``sacct`` polling, which backs off to minutes and without accounting
reports UNKNOWN forever. A preempted or timed-out job that submitit requeued goes back to PENDING and
is waited on.

A job outlives the process that waits for it (SLURM's by design, submitit's local controller too): if
that process dies, ``running_job`` finds the job again from the record ``record_job`` left in its
folder, so a rerun waits for it instead of starting a second job on the same checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError, pickle_load

from cluster.log_forward import LogForwarder

# SLURM job states after which no task will write a result (PENDING/RUNNING/REQUEUED/... are alive).
ENDED_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "REVOKED", "SPECIAL_EXIT", "TIMEOUT"}
GONE = "GONE"  # neither squeue nor sacct knows the job any more
TAIL_LINES = 40
# slurmstepd "exceeded memory limit" / "Exceeded job memory limit", cgroup "oom-kill", srun "Out Of Memory", CUDA
OUT_OF_MEMORY = re.compile(r"exceeded (job )?memory limit|oom[-_ ]?kill|out[-_ ]of[-_ ]memory", re.IGNORECASE)


class JobFailedError(RuntimeError):
    """The job ended without a result; ``log_tail`` holds the last lines of rank 0's log."""

    def __init__(self, job_id: str, problem: str, log_tail: str) -> None:
        super().__init__(f"job {job_id} {problem}\n--- last lines of rank 0's log ---\n{log_tail}")
        self.job_id, self.problem, self.log_tail = job_id, problem, log_tail


JOB_RECORD = "running_job.json"


def record_job(job: submitit.Job, kind: str, *, inputs: str = "") -> None:
    """Note ``job`` in its folder (one job at a time per folder: the newest wins). ``inputs``: what the job's
    result depends on beyond its folder (a hash), for ``running_job`` to tell whether it is the job wanted."""
    record = {"job_id": job.job_id, "kind": kind, "num_tasks": job.num_tasks, "inputs": inputs}
    (Path(job.paths.folder) / JOB_RECORD).write_text(json.dumps(record))


def running_job(folder: Path, *, inputs: str = "") -> submitit.Job | None:
    """The job recorded in ``folder`` if it is still queued or running and was recorded with these ``inputs``,
    re-attached; else None."""
    path = Path(folder) / JOB_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("inputs", "") != inputs:
        return None
    job_id, tasks = str(record["job_id"]), range(int(record["num_tasks"]))
    if record["kind"] == "slurm":
        state = slurm_state(job_id)
        alive = state is not None and state != GONE and state not in ENDED_STATES
        return submitit.SlurmJob(folder, job_id, tasks=tasks) if alive else None
    if record["kind"] == "local" and _local_controller_alive(int(job_id), Path(folder)):
        return submitit.LocalJob(folder, job_id, tasks=tasks, process=_Orphan(int(job_id)))
    return None


def _local_controller_alive(pid: int, folder: Path) -> bool:
    """A local job's id is its controller's pid: alive, and controlling this folder's job (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _alive(pid) and b"submitit.local._local" in cmdline and str(folder.absolute()).encode() in cmdline


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a dead parent's ``wait``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class _Orphan:
    """What ``LocalJob`` needs of its controller's ``Popen`` when another (dead) process started it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def poll(self) -> int | None:
        return None if _alive(self.pid) else 0  # the exit code was its dead parent's to read

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)


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


def node_failures(job_id: str) -> list[str]:
    """The nodes of each of the job's attempts that ended in NODE_FAIL (``sacct -D`` keeps every attempt)."""
    acct = _run(["sacct", "-D", "-X", "-n", "-P", "-o", "State,NodeList", "-j", job_id])
    if acct is None or acct.returncode != 0:
        return []
    attempts = (line.split("|") for line in acct.stdout.splitlines() if "|" in line)
    return [nodes for state, nodes, *_ in attempts if state.startswith("NODE_FAIL")]


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
        self.node_failures_seen = 0

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
            self.report_node_failures()
        if state is None:
            return
        if not self.ended:
            self.ended_at = None
        elif self.ended_at is None:
            self.ended_at = now
        # Tasks write results before they exit; the grace covers shared filesystems that show files late.
        elif now - self.ended_at >= self.grace_s * (6 if state == "COMPLETED" else 1):
            raise _failure(self.job, f"ended without a result (SLURM state {state})")


    def report_node_failures(self) -> None:
        """Name each node failure once: SLURM requeues the job (it resumes from its last commit) unless
        requeueing is off, and the log is the only place that says why the job started over."""
        failures = node_failures(self.job.job_id)
        for nodes in failures[self.node_failures_seen:]:
            self.logger.warning("[job %s] node failure on %s (NODE_FAIL): SLURM requeues the job; training resumes "
                                "from its last committed checkpoint", self.job.job_id, nodes)
        self.node_failures_seen = len(failures)


def _has_results(job: submitit.Job) -> bool:
    with contextlib.suppress(OSError):  # refresh an NFS directory cache, as submitit does
        folder = Path(job.paths.folder)
        folder.chmod(folder.stat().st_mode)
    return all(Path(job.task(i).paths.result_pickle).exists() for i in range(job.num_tasks))


def _task_error(job: submitit.Job, index: int) -> str | None:
    """Task ``index``'s error trace from its result file, or None. Reads the file: ``task.exception()`` would wait for
    the whole job, and a local job's tasks only end together (a cancelled one may take long on a loaded machine)."""
    path = Path(job.task(index).paths.result_pickle)
    with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):
        if path.exists() and (outcome := pickle_load(path))[0] == "error":
            return f"Job (task={index}) failed during processing with trace:\n{outcome[1]}"
    return None


def _failed_task(job: submitit.Job) -> str | None:
    """The error of the rank that failed first (the root cause; the others fail because it went away)."""
    failed = []
    for index in range(job.num_tasks):
        if (error := _task_error(job, index)) is not None:
            failed.append((Path(job.task(index).paths.result_pickle).stat().st_mtime, index, error))
    return min(failed, key=lambda item: item[:2])[2] if failed else None


def _a_rank_raised(job: submitit.Job) -> bool:
    """Whether a task wrote an error result."""
    return any(_task_error(job, index) is not None for index in range(job.num_tasks))


def _failure(job: submitit.Job, problem: str) -> JobFailedError:
    cause, tail = _failed_task(job), log_tail(job)
    if OUT_OF_MEMORY.search(f"{problem}\n{tail}\n{cause or ''}"):
        problem += (" -- out of memory (see the log tail): lower train.micro_batch_size (gradient accumulation "
                    "keeps the global batch); for host memory, raise cluster.mem_gb (the job's limit per node)")
    elif "NODE_FAIL" in problem:
        nodes = ", ".join(node_failures(job.job_id)) or "a node"
        problem += (f" -- node failure on {nodes}, and SLURM did not requeue the job (JobRequeue=0 or --no-requeue): "
                    "rerun the point; training resumes from its last committed checkpoint")
    elif cause is None:
        problem += (" -- no rank reported an error, so they were killed from outside by a signal: the kernel's "
                    "out-of-memory killer (check `dmesg`; lower train.micro_batch_size or raise cluster.mem_gb), "
                    "scancel, a node failure, or a preemption signal sent before submitit could handle it")
    return JobFailedError(job.job_id, f"{problem}:\n{cause}" if cause else problem, tail)


def wait_streaming(job: submitit.Job, logger: logging.Logger | Any, *, poll_s: float = 1.0,
                   pattern: str = "ito_core", liveness_s: float = 3.0, grace_s: float = 10.0,
                   progress_every_s: float = 0.0) -> Any:
    """Block until ``job`` ends and return rank 0's result; log rank 0's stderr lines containing ``pattern``
    (at most one per ``progress_every_s``; 0 = all) and every warning and error (``cluster/log_forward.py``).

    Raises ``JobFailedError`` (with the log tail) when the job ends without a result: a failed rank, a
    cancelled job, a node failure, ... A job that submitit requeued (preemption, time-out) is waited on. A local
    job is cancelled as soon as one of its ranks raised (SLURM's ``--kill-on-bad-exit`` does that for SLURM jobs).
    SLURM jobs are judged by their result files and ``squeue``/``sacct`` (checked every ``liveness_s``),
    not by submitit's ``sacct`` polling, which backs off to minutes and needs accounting.
    """
    slurm = isinstance(job, submitit.SlurmJob)
    offset, watch = 0, _Liveness(job, logger, every_s=liveness_s, grace_s=grace_s)
    stderr = Path(job.task(0).paths.stderr)  # a multi-task job's own paths name no task
    forward = LogForwarder(logger, job_id=job.job_id, every_s=progress_every_s, pattern=pattern, log_path=str(stderr))
    while True:
        done = _has_results(job) if slurm else job.done()
        lines, offset = _new_lines(stderr, offset)
        forward.feed(lines)
        if not slurm and not done and _a_rank_raised(job):
            # Local ranks have no --kill-on-bad-exit: the others would wait in a collective until gloo times out.
            job.cancel()
            raise _failure(job, "failed: a rank raised, so its job's other ranks were stopped")
        if done:
            try:
                result = job.results()[0]  # rank 0's result (a multi-task job returns one per task)
                forward.close()
                return result
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
