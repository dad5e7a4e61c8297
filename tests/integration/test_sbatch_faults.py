"""sbatch against a controller that fails transiently, on the real single-node cluster: a wrapper ``sbatch`` earlier
on PATH fails its first calls with slurmctld's time-out message, either refusing the job or (as an overloaded
controller can) queueing it and still reporting the time-out. The job runs, and exactly once."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import submitit
from fixtures.slurm_cluster import SlurmCluster

from cluster.executors import build_executor
from cluster.waiting import wait_streaming
from ito_core.config import ClusterConfig

pytestmark = [pytest.mark.slurm]

WRAPPER = """#!/bin/bash
# fails the first {failures} calls; "queued": the real sbatch queues the job before the failure is reported
n=$(cat "{count}" 2>/dev/null || echo 0); echo $((n + 1)) > "{count}"
if [ "$n" -lt {failures} ]; then
  [ "{mode}" = queued ] && {real} "$@" > /dev/null
  echo "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation" >&2
  exit 1
fi
exec {real} "$@"
"""


def _faulty_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, failures: int, mode: str) -> Path:
    real = shutil.which("sbatch")
    assert real is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    count = tmp_path / "sbatch-calls"
    (bin_dir / "sbatch").write_text(WRAPPER.format(failures=failures, count=count, mode=mode, real=real))
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return count


def _jobs_of(folder: Path) -> list[str]:
    """Ids of every job whose script came from ``folder`` (queued, running or recently ended)."""
    out = subprocess.run(["squeue", "--me", "-h", "-t", "all", "-o", "%i|%o"], capture_output=True, text=True,
                         check=True).stdout
    return [job_id for job_id, _, script in (line.partition("|") for line in out.splitlines())
            if script.startswith(str(folder))]


@pytest.mark.timeout(240)
@pytest.mark.parametrize(("mode", "failures"), [("refused", 2), ("queued", 1)])
def test_a_transient_sbatch_failure_is_retried_and_submits_once(
        slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: list[submitit.Job],
        mode: str, failures: int) -> None:
    count = _faulty_sbatch(tmp_path, monkeypatch, failures=failures, mode=mode)
    folder = tmp_path / "jobs"
    executor = build_executor(ClusterConfig(kind="slurm", timeout_min=5, submit_rate_per_s=5), folder)
    job = executor.submit(submitit.helpers.CommandFunction(["echo", "trained"]))
    jobs.append(job)
    assert wait_streaming(job, logging.getLogger("test.sbatch"), poll_s=0.5).strip() == "trained"
    assert _jobs_of(folder) == [job.job_id], "one job for one submission"
    # refused: sbatch ran once per try; queued: the retry found the job and did not call sbatch again
    assert int(count.read_text()) == failures + (mode == "refused")
    assert Path(job.paths.submission_file).is_file()
