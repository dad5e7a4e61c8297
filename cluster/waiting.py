"""Wait for a submitit job while forwarding its rank-0 log lines (per-step progress) to a logger.

A job that ends without a result (``scancel``, node failure, out of memory, a rank that crashed) is
raised as ``JobFailedError`` with the tail of rank 0's log, never waited on forever; out of memory
(SLURM's limit, the kernel's OOM killer, CUDA) and ranks killed from outside are named with the fix.
A job whose executor has a liveness check (SLURM's, ``cluster/executors/slurm.py``) is judged by its result
files plus that check; a preempted or timed-out job that submitit requeued goes back to PENDING and is waited on.

A job outlives the process that waits for it (SLURM's by design, submitit's local controller too): if
that process dies, ``running_job`` has its executor find the job again from the record ``record_job`` left in
its folder, so a rerun waits for it instead of starting a second job on the same checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import re
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError, pickle_load

from cluster.executors import EXECUTORS, Liveness, executor_of
from cluster.log_forward import LogForwarder

TAIL_LINES = 40
# What running a stage's job again (a requeue after a node failure, or a rerun of the point) redoes
RERUN_EFFECT = {
    "train": "training resumes from its last committed checkpoint",
    "eval": "the eval starts over (its metrics commit only once all its sets are scored)",
    "prep": "prep starts over and skips what it already committed",
}
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
    re-attached by its executor; else None."""
    path = Path(folder) / JOB_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("inputs", "") != inputs or record["kind"] not in EXECUTORS:
        return None
    return EXECUTORS[record["kind"]].reattach(Path(folder), str(record["job_id"]), int(record["num_tasks"]))


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


def rerun_effect(stage: str) -> str:
    """What running the ``stage``'s job again redoes, for messages about a job that has to run again."""
    return RERUN_EFFECT.get(stage, "the job starts over")


def report_node_failures(job_id: str, failed_nodes: list[str], reported: int, logger: logging.Logger | Any, *,
                         stage: str) -> int:
    """Name each node failure of the job once (the log is the only place that says why it started over); return
    how many are reported now."""
    for nodes in failed_nodes[reported:]:
        logger.warning("[job %s] node failure on %s (NODE_FAIL): SLURM requeues the job; %s", job_id, nodes,
                       rerun_effect(stage))
    return max(reported, len(failed_nodes))


def _failure(job: submitit.Job, problem: str, *, failed_nodes: list[str] | None = None,
             stage: str = "") -> JobFailedError:
    """The error for a job over without a result, naming the likely cause: out of memory, a node failure the
    scheduler did not requeue (``failed_nodes``: its nodes), or a kill from outside."""
    cause, tail = _failed_task(job), log_tail(job)
    if OUT_OF_MEMORY.search(f"{problem}\n{tail}\n{cause or ''}"):
        problem += (" -- out of memory (see the log tail): lower train.micro_batch_size (gradient accumulation "
                    "keeps the global batch); for host memory, raise cluster.mem_gb (the job's limit per node)")
    elif "NODE_FAIL" in problem:
        nodes = ", ".join(failed_nodes or []) or "a node"
        problem += (f" -- node failure on {nodes}, and SLURM did not requeue the job (JobRequeue=0 or --no-requeue): "
                    f"rerun the point; {rerun_effect(stage)}")
    elif cause is None:
        problem += (" -- no rank reported an error, so they were killed from outside by a signal: the kernel's "
                    "out-of-memory killer (check `dmesg`; lower train.micro_batch_size or raise cluster.mem_gb), "
                    "scancel, a node failure, or a preemption signal sent before submitit could handle it")
    return JobFailedError(job.job_id, f"{problem}:\n{cause}" if cause else problem, tail)


def wait_streaming(job: submitit.Job, logger: logging.Logger | Any, *, poll_s: float = 1.0,
                   pattern: str = "ito_core", grace_s: float = 10.0, progress_every_s: float = 0.0,
                   stage: str = "") -> Any:
    """Block until ``job`` ends and return rank 0's result; log rank 0's stderr lines containing ``pattern``
    (at most one per ``progress_every_s``; 0 = all) and every warning and error (``cluster/log_forward.py``).

    Raises ``JobFailedError`` (with the log tail) when the job ends without a result: a failed rank, a
    cancelled job, a node failure, ... A job that submitit requeued (preemption, time-out) is waited on. A job whose
    executor has a liveness check (SLURM) is judged by its result files and that check, which shares one
    scheduler query per interval among all the jobs this process waits for; any other job by its own ``done()``,
    and cancelled as soon as one of its ranks raised (SLURM's ``--kill-on-bad-exit`` does that for SLURM jobs).
    ``stage`` (train, eval, prep) says in node-failure messages what running the job again redoes.
    """
    executor = executor_of(job)
    watch = executor.liveness(job, logger, grace_s) if executor.liveness else None
    try:
        return _wait(job, logger, watch, poll_s=poll_s, pattern=pattern, progress_every_s=progress_every_s,
                     stage=stage)
    finally:
        if watch is not None:
            watch.close()


def _wait(job: submitit.Job, logger: logging.Logger | Any, watch: Liveness | None, *, poll_s: float,
          pattern: str, progress_every_s: float, stage: str) -> Any:
    offset, stderr = 0, Path(job.task(0).paths.stderr)  # a multi-task job's own paths name no task
    reported = 0  # node failures named so far
    forward = LogForwarder(logger, job_id=job.job_id, every_s=progress_every_s, pattern=pattern, log_path=str(stderr))
    while True:
        done = _has_results(job) if watch else job.done()
        lines, offset = _new_lines(stderr, offset)
        forward.feed(lines)
        if watch is None and not done and _a_rank_raised(job):
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
                # on a scheduler it only counts once the scheduler says the job is over.
                if watch is not None:
                    watch.check(force=True)
                if watch is None or watch.ended:
                    state = watch.state if watch is not None else job.state
                    raise _failure(job, f"failed (state {state})",
                                   failed_nodes=watch.failed_nodes if watch else None, stage=stage) from err
        if watch is not None:
            problem = watch.check()
            reported = report_node_failures(job.job_id, watch.failed_nodes, reported, logger, stage=stage)
            if problem is not None:
                raise _failure(job, problem, failed_nodes=watch.failed_nodes, stage=stage)
        time.sleep(poll_s)
