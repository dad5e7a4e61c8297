"""``cluster.kind=slurm``: submitit's SlurmExecutor, with a throttled ``sbatch`` that is retried and never doubles.

``slurm_parameters`` maps ``ClusterConfig`` onto submitit's ``SlurmExecutor`` names (sbatch's, with ``_`` for
``-``); ``render_sbatch`` shows the exact script a submission would write (the plan's preview). Jobs are judged by
their result files plus the scheduler's state, shared by every waiting job of the flow process
(``cluster/slurm_watch.py``), not by submitit's own ``sacct`` polling, which backs off to minutes and without
accounting reports UNKNOWN forever. Submission: ``cluster/slurm_submit.py``.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import DelayedSubmission, JobPaths

from cluster.executors import Executor
from cluster.slurm_submit import submit_script
from cluster.slurm_watch import ENDED_STATES, GONE, SlurmWatcher, slurm_state
from ito_core.config import ClusterConfig

# sbatch options the cluster config (or submitit itself) owns: cluster.extra_sbatch must not fight them.
MANAGED_SBATCH = {
    "job-name": "the job name", "nodes": "cluster.nodes", "ntasks-per-node": "cluster.tasks_per_node",
    "cpus-per-task": "cluster.cpus_per_task", "gpus-per-node": "cluster.gpus_per_node", "mem": "cluster.mem_gb",
    "time": "cluster.timeout_min", "partition": "cluster.partition", "account": "cluster.account",
    "qos": "cluster.qos", "constraint": "cluster.constraint", "signal": "the USR2 preemption signal",
    "output": "submitit's log paths", "error": "submitit's log paths", "open-mode": "submitit's log paths",
    "array": "submitit's job arrays",
}
SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")
SLURM_NAME = re.compile(r"[A-Za-z0-9_.+@-]+")  # partition, account, QOS names (slurm_check.py: do they exist)
WATCHER = SlurmWatcher(interval_s=3.0)  # one per flow process: one squeue per 3 s covers all of its jobs


def signal_delay_s(timeout_min: int) -> int:
    """Seconds before the time limit at which SLURM sends USR2 (submitit then checkpoints and requeues).

    Training resumes from the newest committed checkpoint, so USR2 only has to leave time for the
    requeue: 90 s (submitit's default) on real time limits, a quarter of very short ones.
    """
    return max(5, min(90, timeout_min * 60 // 4))


def slurm_parameters(cfg: ClusterConfig, *, name: str) -> dict[str, Any]:
    """``ClusterConfig`` -> ``SlurmExecutor.update_parameters`` keywords (sbatch option names)."""
    params: dict[str, Any] = {
        "job_name": name, "nodes": cfg.nodes, "ntasks_per_node": cfg.tasks_per_node,
        "cpus_per_task": cfg.cpus_per_task, "time": cfg.timeout_min, "signal_delay_s": signal_delay_s(cfg.timeout_min),
        # one rank failing must end the step, else the other ranks wait in a collective until gloo/NCCL times out
        "srun_args": ["--kill-on-bad-exit=1"],
        "additional_parameters": {str(k).replace("_", "-"): v for k, v in cfg.extra_sbatch.items()},
    }
    optional = {"gpus_per_node": cfg.gpus_per_node, "mem": f"{cfg.mem_gb}GB" if cfg.mem_gb else "",
                "partition": cfg.partition, "account": cfg.account, "qos": cfg.qos, "constraint": cfg.constraint}
    params.update({k: v for k, v in optional.items() if v})
    return params


class RetryingSlurmExecutor(submitit.SlurmExecutor):
    """submitit's SlurmExecutor whose ``sbatch`` goes through ``submit_script``: throttled, retried on transient
    controller errors, and a job a failed try queued is adopted rather than submitted again."""

    def __init__(self, folder: Path, *, max_num_timeout: int, rate_per_s: float, retry_s: float) -> None:
        super().__init__(folder=folder, max_num_timeout=max_num_timeout)
        self.rate_per_s, self.retry_s = rate_per_s, retry_s

    def _internal_process_submissions(self, delayed_submissions: list[DelayedSubmission]) -> list[submitit.Job]:
        if len(delayed_submissions) == 1:
            return super()._internal_process_submissions(delayed_submissions)
        # A job array (prep): submitit's SlurmExecutor submits it through a plain SlurmExecutor copy, whose sbatch
        # would skip ours; these are its steps with a copy of this executor.
        folder = JobPaths.get_first_id_independent_folder(self.folder)
        folder.mkdir(parents=True, exist_ok=True)
        pickles = []
        for delayed in delayed_submissions:
            pickles.append(folder / f"{uuid.uuid4().hex}.pkl")
            delayed.set_timeout(self.parameters.get("time", 5), self.max_num_timeout)
            delayed.dump(pickles[-1])
        array = RetryingSlurmExecutor(self.folder, max_num_timeout=self.max_num_timeout, rate_per_s=self.rate_per_s,
                                      retry_s=self.retry_s)
        array.update_parameters(**self.parameters)
        array.parameters["map_count"] = len(delayed_submissions)
        first = array._submit_command(self._submitit_command_str)
        jobs = [submitit.SlurmJob(folder=self.folder, job_id=f"{first.job_id}_{index}", tasks=range(first.num_tasks))
                for index in range(len(delayed_submissions))]
        for job, path in zip(jobs, pickles, strict=True):
            job.paths.move_temporary_file(path, "submitted_pickle")
        return jobs

    def _submit_command(self, command: str) -> submitit.Job:
        # submitit's own steps (core.Executor._submit_command) around our sbatch: write the script under a fresh
        # uuid, submit, then move the script to the job's folder and note the job id
        uid = uuid.uuid4().hex  # the script's unique path is how a retry finds a job that a failed try queued
        script = JobPaths.get_first_id_independent_folder(self.folder) / f".submission_file_{uid}.sh"
        script.write_text(self._make_submission_file_text(command, uid))
        job_id = submit_script(script, rate_per_s=self.rate_per_s, retry_s=self.retry_s)
        job = self.job_class(folder=self.folder, job_id=job_id, tasks=list(range(self._num_tasks())))
        job.paths.move_temporary_file(script, "submission_file", keep_as_symlink=True)
        self._write_job_id(job.job_id, uid)
        self._set_job_permissions(job.paths.folder)
        return job


def build(cfg: ClusterConfig, folder: Path, name: str) -> submitit.Executor:
    """Jobs requeued up to ``max_requeues`` times after a time-out (submitit's ``max_num_timeout``; preemptions
    requeue without limit)."""
    try:
        executor = RetryingSlurmExecutor(folder, max_num_timeout=cfg.max_requeues, rate_per_s=cfg.submit_rate_per_s,
                                         retry_s=cfg.submit_retry_s)
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise ValueError(f"config cluster.kind: 'slurm' but no SLURM client here ({err}); "
                         "run on a SLURM login node, or use cluster.kind=local") from err
    executor.update_parameters(**slurm_parameters(cfg, name=name))
    return executor


def render_sbatch(executor: submitit.SlurmExecutor) -> str:
    """The sbatch script ``executor.submit`` would write (submitit's own renderer; nothing is submitted)."""
    return executor._make_submission_file_text(executor._submitit_command_str, uid="preview")


def preview(cfg: ClusterConfig, folder: Path) -> str:
    """The plan's view of a training job: its sbatch script (nothing is created or submitted)."""
    try:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=cfg.max_requeues)
    except RuntimeError as err:  # no srun on this host
        return f"(no SLURM client on this host, so no script: {err})"
    executor.update_parameters(**slurm_parameters(cfg, name="ito-train"))
    return f"sbatch script:\n\n```bash\n{render_sbatch(executor).rstrip()}\n```"


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ValueError(f"config {key}: {problem}; {fix}")


def check(cfg: ClusterConfig) -> None:
    """The settings only SLURM reads: names sbatch takes, extra sbatch options that do not fight ours, submission."""
    for key in ("partition", "account", "qos"):  # a partition may be a list: "gpu,gpu-long"
        value = getattr(cfg, key)
        names = value.split(",") if key == "partition" else [value]
        _require(not value or all(SLURM_NAME.fullmatch(name) for name in names), f"cluster.{key}",
                 f"{value!r} is not a SLURM {key} name",
                 "use a name `sinfo`/`sacctmgr` lists (letters, digits, '_', '-', '.'), or '' for the default")
    _require("\n" not in cfg.constraint, "cluster.constraint", "contains a newline", "remove it")
    for raw, value in cfg.extra_sbatch.items():
        key = str(raw).replace("_", "-")
        _require(bool(SBATCH_KEY.match(key)), f"cluster.extra_sbatch.{raw}", "is not an sbatch long option name",
                 "use names like 'mail-type' or 'exclusive' (no leading dashes)")
        _require(key not in MANAGED_SBATCH, f"cluster.extra_sbatch.{raw}",
                 f"--{key} is set from {MANAGED_SBATCH.get(key)}", "set that instead")
        _require(isinstance(value, str | int | float | bool) and "\n" not in str(value),
                 f"cluster.extra_sbatch.{raw}", f"{value!r}", "use a one-line string, number or true")
    _require(cfg.submit_rate_per_s > 0, "cluster.submit_rate_per_s", f"{cfg.submit_rate_per_s!r}",
             "use a number > 0 (sbatch calls a second at most)")
    _require(cfg.submit_retry_s >= 0, "cluster.submit_retry_s", f"{cfg.submit_retry_s!r}",
             "use seconds >= 0 (0 = no retry)")


def check_folder(folder: Path) -> None:
    """SLURM reads '%' in log paths as a pattern and fails to open paths with a backslash."""
    if bad := sorted({c for c in str(folder) if c in "%\\"}):
        raise ValueError(f"config cluster.work_dir: job folder {str(folder)!r} contains {bad}; "
                         "pick a work_dir (and run key) without '%' or backslashes")


def reattach(folder: Path, job_id: str, num_tasks: int) -> submitit.Job | None:
    state = slurm_state(job_id)
    alive = state is not None and state != GONE and state not in ENDED_STATES
    return submitit.SlurmJob(folder, job_id, tasks=range(num_tasks)) if alive else None


class SlurmLiveness:
    """Client-side guard: a SLURM job that stays ended (or unknown to the scheduler) without results fails.
    Its state comes from the process's shared ``WATCHER``, so waiting on many jobs costs one query per interval."""

    def __init__(self, job: submitit.Job, logger: Any, grace_s: float, *, watcher: SlurmWatcher | None = None) -> None:
        self.job, self.logger, self.grace_s = job, logger, grace_s
        self.watcher = watcher or WATCHER
        self.watcher.register(job.job_id)
        self.state: str | None = None
        self.failed_nodes: list[str] = []
        self.ended_at: float | None = None

    @property
    def ended(self) -> bool:
        """SLURM says the job is over (also True when it can't tell)."""
        return self.state is None or self.state in ENDED_STATES or self.state == GONE

    def check(self, *, force: bool = False) -> str | None:
        info, now = self.watcher.info(self.job.job_id, fresh=force), time.monotonic()
        if info.state is not None and info.state != self.state:
            self.logger.info("[job %s] SLURM state %s", self.job.job_id, info.state)
            self.state = info.state
        self.failed_nodes = list(info.node_failures)  # the waiter names each (cluster/waiting.py)
        if info.state is None:
            return None
        if not self.ended:
            self.ended_at = None
        elif self.ended_at is None:
            self.ended_at = now
        # Tasks write results before they exit; the grace covers shared filesystems that show files late.
        elif now - self.ended_at >= self.grace_s * (6 if info.state == "COMPLETED" else 1):
            return f"ended without a result (SLURM state {info.state})"
        return None

    def close(self) -> None:
        self.watcher.unregister(self.job.job_id)


EXECUTOR = Executor(name="slurm", build=build, job_type=submitit.SlurmJob, reattach=reattach, liveness=SlurmLiveness,
                    check=check, check_folder=check_folder, preview=preview, remote=True, multi_node=True)
