"""Real SLURM (single node, cluster/slurm-up.sh): 2-task ZeRO-2 training through ``submit_training``,
preemption -> checkpoint() -> requeue -> exact resume, and a user ``scancel`` reported as a failure.

Jobs inherit this process's environment (sbatch's default ``--export=ALL``): the CPU accelerator,
one thread per rank and the prebuilt DeepSpeed op cache reach every rank without extra setup.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import submitit
import torch
from fixtures.slurm_cluster import SlurmCluster
from fixtures.slurm_jobs import Collect, When, cancel_unfinished
from fixtures.tiny_run import tiny_config

from cluster.executors import build_executor
from cluster.jobs import submit_training
from cluster.slurm_watch import slurm_state
from cluster.waiting import JobFailedError, wait_streaming
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import ClusterConfig, RunConfig
from ito_core.storage import LocalStore
from ito_core.strip import consolidate

pytestmark = [pytest.mark.slurm, pytest.mark.distributed]

STEPS = 60  # long enough that a signal sent at the first commit (step 3) lands mid-run
SLURM_RUN = ["deepspeed=zero2", "cluster=slurm", "cluster.tasks_per_node=2", f"train.steps={STEPS}",
             "train.checkpoint_every=3", "train.log_every=3"]
KEY = "runs/slurm"
CKPTS = f"{KEY}/checkpoints"


def _config(tmp: Path, *overrides: str) -> RunConfig:
    return tiny_config(tmp, *SLURM_RUN, *overrides)


def _submit(cfg: RunConfig, shards: list[str], jobs: list[submitit.Job]) -> submitit.Job:
    job = submit_training(cfg, shard_paths=shards, shard_samples=[32, 32, 32], run_key=KEY)
    jobs.append(job)
    assert isinstance(job, submitit.SlurmJob)
    return job


def _eventually(check: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _rank0_log(job: submitit.Job) -> str:
    return Path(job.task(0).paths.stderr).read_text(errors="replace")


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster: SlurmCluster, small_shards: list[str],
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, submitit.Job, dict, list[str]]:
    cfg = _config(tmp_path_factory.mktemp("slurm_a"))
    jobs: list[submitit.Job] = []
    handler, logger = Collect(), logging.getLogger("test.slurm.forwarded")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        summary = wait_streaming(_submit(cfg, small_shards, jobs), logger, poll_s=0.5)
    finally:
        logger.removeHandler(handler)
        cancel_unfinished(jobs)
    return cfg, jobs[0], summary, handler.lines


@pytest.mark.timeout(300)
def test_two_task_zero2_job_trains_and_commits(uninterrupted: tuple[RunConfig, submitit.Job, dict, list[str]]) -> None:
    cfg, job, summary, forwarded = uninterrupted
    assert summary["step"] == STEPS
    assert len(job.results()) == 2, "one result per SLURM task (rank)"
    assert _eventually(lambda: slurm_state(job.job_id) == "COMPLETED"), slurm_state(job.job_id)
    assert "#SBATCH --ntasks-per-node=2" in Path(job.paths.submission_file).read_text()
    store = LocalStore(cfg.storage.root)
    assert committed_tags(store, CKPTS)[-1] == tag_for(STEPS)
    assert len(list((Path(store.url(CKPTS)) / tag_for(STEPS)).glob("*optim_states.pt"))) == 2, "a ZeRO shard per rank"
    assert any(f"step {STEPS}/{STEPS}" in line for line in forwarded), "rank 0's progress reaches the caller's logger"


@pytest.mark.timeout(420)
def test_preempted_job_requeues_and_resumes_exactly(
        uninterrupted: tuple[RunConfig, submitit.Job, dict, list[str]], small_shards: list[str], tmp_path: Path,
        jobs: list[submitit.Job]) -> None:
    """USR2 mid-run -> TrainJob.checkpoint() -> requeued -> resumes from the last commit -> same weights."""
    cfg = _config(tmp_path)
    store = LocalStore(cfg.storage.root)
    job = _submit(cfg, small_shards, jobs)
    preempt = When(lambda: bool(committed_tags(store, CKPTS)),
                    lambda: subprocess.run(["scancel", "--signal", "USR2", job.job_id], check=True))
    preempt.start()
    summary = wait_streaming(job, logging.getLogger("test.slurm"), poll_s=0.5)
    preempt.join(5)
    assert preempt.error is None, preempt.error

    assert summary["step"] == STEPS
    log = _rank0_log(job)
    assert "Calling checkpoint method" in log, "submitit's handler checkpointed on USR2"
    # SLURM's own record of the requeue: submitit's "Requeued job" line is written after `scontrol requeue`
    # returns, and the requeue itself may end that scontrol (SIGTERM to the job's processes) before it does
    attempts = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job.job_id], text=True,
                              capture_output=True, check=True).stdout.split()
    assert attempts[:-1] == ["REQUEUED"], "the same job was requeued once (its last attempt may still be ending)"
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    assert len(resumed) == 1 and f"{CKPTS}/step_" in resumed[0], resumed
    assert tag_for(STEPS) not in resumed[0], "the signal landed mid-run"
    original_store = LocalStore(uninterrupted[0].storage.root)
    original = consolidate(Path(original_store.url(CKPTS)), tag_for(STEPS), zero_stage=2)
    after_resume = consolidate(Path(store.url(CKPTS)), tag_for(STEPS), zero_stage=2)
    assert original.keys() == after_resume.keys()
    for name in original:
        assert torch.equal(original[name], after_resume[name]), name


@pytest.mark.timeout(300)
def test_user_scancel_fails_fast_with_log_tail_and_is_not_requeued(
        slurm_cluster: SlurmCluster, small_shards: list[str], tmp_path: Path, jobs: list[submitit.Job]) -> None:
    # submitit ignores scancel's SIGTERM: the run must outlast KillWait (then SIGKILL) to be cut short
    cfg = _config(tmp_path, "train.steps=2000", "train.checkpoint_every=100")
    job = _submit(cfg, small_shards, jobs)
    cancel = When(lambda: "step 3/" in (_rank0_log(job) if Path(job.task(0).paths.stderr).exists() else ""),
                   lambda: subprocess.run(["scancel", job.job_id], check=True))
    cancel.start()
    with pytest.raises(JobFailedError) as failure:  # at all: a 2000-step run outlasts the test's timeout
        wait_streaming(job, logging.getLogger("test.slurm"), poll_s=0.5)
    cancel.join(5)
    assert cancel.error is None, cancel.error

    assert cancel.done_at is not None, "the job was cancelled before the wait ended"
    assert "CANCELLED" in str(failure.value)
    assert "step 3/" in failure.value.log_tail, "the error carries the end of rank 0's log"
    time.sleep(2)  # a requeued job would be PENDING again by now
    assert slurm_state(job.job_id) == "CANCELLED"
    assert "Requeued job" not in _rank0_log(job)


@pytest.mark.timeout(180)
def test_crashed_rank_ends_the_job_and_is_reported(slurm_cluster: SlurmCluster, tmp_path: Path,
                                                   jobs: list[submitit.Job]) -> None:
    """Rank 1 fails while rank 0 would wait forever (as in a collective): the job ends, rank 1's error is raised.

    The job folder has spaces, quotes and shell syntax: sbatch and srun must get it back intact.
    """
    folder = tmp_path / "it's a \"weird\" dir; echo x"
    executor = build_executor(ClusterConfig(kind="slurm", tasks_per_node=2, timeout_min=5), folder)
    # rank 0 ignores SIGTERM (as submitit's handler does): only SIGKILL ends it, and it writes no result
    command = 'if [ "$SLURM_PROCID" = 1 ]; then echo rank-1-gives-up >&2; exit 3; fi; trap "" TERM; sleep 600'
    job = executor.submit(submitit.helpers.CommandFunction(["bash", "-c", command]))
    jobs.append(job)
    # Ended by the crash: rank 0 would sleep past the test's timeout (no bound on the time here: load varies).
    with pytest.raises(JobFailedError, match="state FAILED") as failure:
        wait_streaming(job, logging.getLogger("test.slurm"), poll_s=0.5, grace_s=2)
    assert "rank-1-gives-up" in str(failure.value), "the crashed rank's error is in the report"
    assert Path(job.task(1).paths.result_pickle).exists(), "results landed in the weird folder"
    assert not Path(job.task(0).paths.result_pickle).exists(), "rank 0 was killed, not finished"


# One point of a cluster=slurm sweep, eval settings left at their default (eval.executor=auto): 1 rank trains
# the tiny model 2 steps on embedded shapes, eval is zero-shot on 64 Fashion-MNIST images, retrieval on shapes.
POINT = ("cluster=slurm", "train.steps=2", "train.checkpoint_every=2", "data.sources=[shapes]",
         "data.shapes_train=128", "data.shapes_eval=64", "data.samples_per_shard=64", "eval.max_samples=64",
         "eval.zero_shot=fashion_mnist", "eval.retrieval=shapes", "eval.linear_probe=", "eval.modality_gap=",
         "eval.umap_points=0")


@pytest.mark.timeout(420)
def test_a_slurm_point_preps_and_evaluates_in_jobs_not_in_the_flow_process(
        slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import stages
    from ito_core.eval.stage import run_eval

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("the flow's process ran the eval or the prep")

    monkeypatch.setattr(stages, "run_eval", not_here)
    monkeypatch.setattr(stages, "prepare", not_here)
    cfg, key = tiny_config(tmp_path, *POINT), "runs/point"
    assert cfg.eval.executor == "auto" and run_eval is not not_here

    data_keys = stages.prep_task.fn(cfg)
    stages.train_task.fn(cfg, data_keys, key)
    stages.strip_task.fn(cfg, key)
    records = stages.eval_task.fn(cfg, data_keys, key)

    prep_jobs = list((Path(cfg.cluster.work_dir).resolve() / "data").glob("*/prep-jobs/*_submission.sh"))
    assert prep_jobs and all("#SBATCH" in script.read_text() for script in prep_jobs), "prep ran as an sbatch job"
    eval_jobs = Path(cfg.cluster.work_dir).resolve() / key / "eval-jobs"
    logs = sorted(eval_jobs.glob("*_0_log.err"))
    assert len(logs) == 1, "one eval job, submitted to SLURM"
    job_id = logs[0].name.split("_")[0]
    log = logs[0].read_text(errors="replace") + logs[0].with_suffix(".out").read_text(errors="replace")
    assert "eval fashion_mnist zeroshot_classification" in log
    assert "#SBATCH" in (eval_jobs / f"{job_id}_submission.sh").read_text(), "sbatch ran it, not a local process"
    assert {r["dataset"] for r in records} == {"fashion_mnist", "shapes"}
    assert LocalStore(cfg.storage.root).read_json(f"{key}/eval/manifest.json")["records"] == records
