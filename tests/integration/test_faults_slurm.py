"""Real SLURM faults beyond tests/integration/test_slurm.py (training preempted, user scancel, a crashed
rank): a training job that outgrows its memory limit, and an eval job (``eval.executor=job``) preempted.

cluster/slurm-up.sh enforces ``--mem`` the way a cgroup limit would (``jobacct_gather/linux`` with
``OverMemoryKill``): two ranks of the tiny run with one data-loader worker each need well over 1 GB, so
``cluster.mem_gb=1`` gets the step killed by slurmstepd. The stage reports it as out of memory, names
the fix, carries the log tail, and the job is not requeued.

A preempted eval job (``scancel --signal USR2``, as SLURM does before preemption or a time limit) is
requeued by submitit and evaluates again from the start: eval holds no state worth resuming. (A USR2 in
the second before submitit installs its handler, while it unpickles the job, ends the job instead: it
is then reported as failed, killed by a signal, and the stage's retry runs it again.)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import submitit
from fixtures.faults import TrainRanks
from fixtures.slurm_cluster import SlurmCluster
from fixtures.tiny_run import tiny_config
from integration.test_slurm import KEY, SLURM_RUN

from cluster.jobs import submit_eval, submit_training
from cluster.slurm_watch import slurm_state
from cluster.waiting import JobFailedError, wait_streaming
from ito_core.prep import prepare, shard_list
from ito_core.storage import build_store
from ito_core.strip import strip

pytestmark = [pytest.mark.slurm, pytest.mark.distributed]

# One rank trains the tiny model for 2 steps on 128 embedded samples; eval (a one-task SLURM job) is zero-shot
# on 64 Fashion-MNIST images, then retrieval on 64 shapes.
EVAL_RUN = ("cluster=slurm", "train.steps=2", "train.checkpoint_every=2", "data.sources=[shapes]",
            "data.shapes_train=128", "data.shapes_eval=64", "data.samples_per_shard=64", "eval.max_samples=64",
            "eval.zero_shot=fashion_mnist", "eval.retrieval=shapes", "eval.linear_probe=", "eval.modality_gap=",
            "eval.executor=job")


@pytest.mark.timeout(300)
def test_a_job_over_its_memory_limit_is_reported_as_out_of_memory(
        slurm_cluster: SlurmCluster, small_shards: list[str], tmp_path: Path,
        jobs: list[submitit.Job]) -> None:  # noqa: F811
    cfg = tiny_config(tmp_path, *SLURM_RUN, "cluster.mem_gb=1", "data.num_workers=1")
    job = submit_training(cfg, shard_paths=small_shards, shard_samples=[32, 32, 32], run_key=KEY)
    jobs.append(job)
    start = time.monotonic()
    with pytest.raises(JobFailedError) as failure:
        wait_streaming(job, logging.getLogger("test.faults.slurm"), poll_s=0.5)

    message = str(failure.value)
    print(f"reported {time.monotonic() - start:.0f} s after submission:\n{message[:400]}")
    assert "out of memory" in message and "raise cluster.mem_gb" in message and "train.micro_batch_size" in message
    assert "exceeded memory limit" in failure.value.log_tail, "the log tail shows SLURM's own words"
    assert slurm_state(job.job_id) == "FAILED"
    assert "Requeued job" not in Path(job.task(0).paths.stderr).read_text(errors="replace"), "not requeued"


@pytest.mark.timeout(420)
def test_a_preempted_eval_job_is_requeued_and_commits(
        slurm_cluster: SlurmCluster, ranks: TrainRanks, tmp_path: Path, jobs: list[submitit.Job]) -> None:  # noqa: F811
    cfg = tiny_config(tmp_path, *EVAL_RUN)
    store = build_store(cfg.storage)
    data_keys = prepare(cfg.data, cfg.eval, store)
    shards, counts = shard_list(store, data_keys["train"])
    ranks.start(cfg, shards=shards, shard_samples=counts, run_key=KEY, name="train").finish()
    (tmp_path / "strip").mkdir()
    strip(cfg, store=store, run_key=KEY, staging=tmp_path / "strip")

    job = submit_eval(cfg, data_keys=data_keys, run_key=KEY)
    jobs.append(job)
    wait_for_usr2_handler(job.job_id)
    subprocess.run(["scancel", "--signal", "USR2", job.job_id], check=True)
    records = wait_streaming(job, logging.getLogger("test.faults.slurm"), poll_s=0.5)

    paths = job.task(0).paths
    log = Path(paths.stdout).read_text(errors="replace") + Path(paths.stderr).read_text(errors="replace")
    assert f"Requeued job {job.job_id}" in log, "submitit's checkpoint handler requeued the same job"
    assert {r["dataset"] for r in records} == {"fashion_mnist", "shapes"}
    assert log.count("eval fashion_mnist zeroshot_classification") == 1, "the signal came before the eval ended"
    assert store.read_json(f"{KEY}/eval/manifest.json")["records"] == records


def wait_for_usr2_handler(job_id: str, timeout_s: float = 120) -> None:
    """Until the job's task has submitit's USR2 handler: submitit installs it after unpickling the job (a
    second or so after start), and a USR2 before that ends the task instead of requeueing it."""
    usr2 = 1 << (signal.SIGUSR2 - 1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error, OSError, StopIteration):
                if ("submitit.core._submit" in " ".join(proc.info["cmdline"] or [])
                        and proc.environ().get("SLURM_JOB_ID") == job_id):
                    status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                    if int(next(line for line in status if line.startswith("SigCgt:")).split()[1], 16) & usr2:
                        return
        time.sleep(0.05)
    pytest.fail(f"job {job_id}'s task never installed submitit's USR2 handler")
