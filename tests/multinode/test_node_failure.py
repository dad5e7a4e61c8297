"""A node dies mid-training (kill -9 of everything on mn2: slurmd, slurmstepd, the rank): SLURM declares it
DOWN after SlurmdTimeout, ends the job's other node with NODE_FAIL and requeues the job; once mn2's slurmd is
back, the job runs again, resumes from its last committed checkpoint (S3) and ends bitwise equal to an
uninterrupted run. The stage log names the node failure. Checkpoints pass through each node's own scratch
(``cluster.scratch_dir``), never the shared work_dir, and the resume fetches only the files each node's rank loads.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import submitit
import torch
from fixtures.multinode_cluster import MultiNodeCluster
from fixtures.s3_server import S3Bucket
from fixtures.slurm_jobs import Collect, When
from fixtures.tiny_run import tiny_config

from cluster.jobs import node_scratch, submit_training
from cluster.waiting import wait_streaming
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig
from ito_core.storage import build_store
from ito_core.strip import consolidate

STEPS = 30
KEY = "runs/node-failure"
CKPTS = f"{KEY}/checkpoints"
RUN = ["deepspeed=zero2", f"train.steps={STEPS}", "train.checkpoint_every=5", "train.log_every=5",
       "cluster.tasks_per_node=1", "cluster.timeout_min=20"]


def _config(tmp: Path, bucket: S3Bucket, prefix: str, *overrides: str) -> RunConfig:
    return tiny_config(tmp, *RUN, *bucket.storage_overrides(prefix), *overrides)


def _train(cfg: RunConfig, shards: list[str], jobs: list[submitit.Job], logger: logging.Logger) -> dict:
    job = submit_training(cfg, shard_paths=shards, shard_samples=[32, 32, 32], run_key=KEY)
    jobs.append(job)
    return job, wait_streaming(job, logger, poll_s=0.5, stage="train")


def _final_weights(cfg: RunConfig, tmp: Path) -> dict[str, torch.Tensor]:
    store = build_store(cfg.storage)
    store.download_dir(f"{CKPTS}/{tag_for(STEPS)}", tmp / tag_for(STEPS))
    return consolidate(tmp, tag_for(STEPS), zero_stage=2)


def _kill_node(cluster: MultiNodeCluster, node: str) -> None:
    for pid in cluster.node_pids(node):  # slurmd, slurmstepd and the rank: the node is gone
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)


def _until(check, timeout_s: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.5)


@pytest.mark.timeout(600)
def test_node_failure_requeues_and_resumes_exactly(mn_slurm: MultiNodeCluster, mn_bucket: S3Bucket,
                                                   small_shards: list[str], tmp_path: Path,
                                                   jobs: list[submitit.Job]) -> None:
    logger, lines = logging.getLogger("test.multinode.node_failure"), Collect()
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    cfg = _config(tmp_path / "failed", mn_bucket, "failed", "cluster=slurm", "cluster.nodes=2")
    store = build_store(cfg.storage)

    def fail_and_return() -> None:
        _kill_node(mn_slurm, "mn2")
        _until(lambda: mn_slurm.node_state("mn2").startswith("down"), 120)
        restarted = mn_slurm.run_on("mn2", "slurmd", "-N", "mn2")  # the node comes back (ReturnToService=2)
        assert restarted.returncode == 0, restarted.stderr

    failure = When(lambda: bool(committed_tags(store, CKPTS)), fail_and_return, timeout_s=300)
    failure.start()
    try:
        job, summary = _train(cfg, small_shards, jobs, logger)
    finally:
        failure.join(150)
        logger.removeHandler(lines)
    assert failure.error is None, failure.error
    assert summary["step"] == STEPS

    assert sum("node failure on mn[1-2] (NODE_FAIL)" in line for line in lines.lines) == 1, lines.lines

    def attempts() -> list[str]:
        command = mn_slurm.command("sacct", "-D", "-X", "-n", "-P", "-o", "State", "-j", job.job_id)
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()

    _until(lambda: attempts()[-1] == "COMPLETED", 60)  # the tasks write their results, then exit
    assert attempts() == ["NODE_FAIL", "COMPLETED"]
    rank0 = Path(job.task(0).paths.stderr).read_text(errors="replace")
    resumed = [line for line in rank0.splitlines() if "resumed from" in line]
    assert len(resumed) == 1 and f"{CKPTS}/step_" in resumed[0] and tag_for(STEPS) not in resumed[0], resumed

    scratch = [node_scratch(cfg.cluster, KEY) / f"node-{node}" for node in (0, 1)]
    left = {str(path) for folder in scratch for path in folder.glob("step_*")}  # DeepSpeed's scripts may stay
    assert all(folder.is_dir() for folder in scratch) and not left, \
        f"each node stages checkpoints in its own scratch and removes them once committed or loaded: {left}"
    assert not list(Path(cfg.cluster.work_dir).rglob("*.pt")), "no checkpoint passed through the shared work_dir"

    reference = _config(tmp_path / "uninterrupted", mn_bucket, "uninterrupted", "cluster=local",
                        "cluster.tasks_per_node=2", "cluster.nodes=1")
    _train(reference, small_shards, jobs, logging.getLogger("test.multinode.reference"))
    after_failure, uninterrupted = _final_weights(cfg, tmp_path / "a"), _final_weights(reference, tmp_path / "b")
    assert after_failure.keys() == uninterrupted.keys()
    for name, tensor in after_failure.items():
        assert torch.equal(tensor, uninterrupted[name]), name
