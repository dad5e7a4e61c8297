"""cluster=local fails fast: a rank that raises ends its job at once (its siblings would otherwise wait in a
collective until the gloo timeout), and that rank's error is what the stage reports."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import submitit

from cluster.executors import build_executor
from cluster.waiting import JobFailedError, wait_streaming
from ito_core.config import ClusterConfig

pytestmark = pytest.mark.timeout(120)  # without the fix rank 0 sleeps for 600 s


def test_a_rank_that_raises_ends_the_local_job_and_is_reported(tmp_path: Path) -> None:
    # rank 1 gives up at once; rank 0 would wait (as in a collective whose peer is gone)
    command = 'if [ "$SUBMITIT_LOCAL_GLOBALID" = 1 ]; then echo rank-1-gives-up >&2; exit 3; fi; sleep 600'
    executor = build_executor(ClusterConfig(kind="local", tasks_per_node=2, timeout_min=30), tmp_path)
    job = executor.submit(submitit.helpers.CommandFunction(["bash", "-c", command]))
    with pytest.raises(JobFailedError, match="a rank raised") as failure:
        wait_streaming(job, logging.getLogger("test.local"), poll_s=0.2)
    assert "rank-1-gives-up" in str(failure.value), "the failed rank's own error is reported"
    deadline = time.monotonic() + 30
    while job.state not in ("FINISHED", "INTERRUPTED", "FAILED") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job._process.poll() is not None, "the job's controller and its sleeping rank 0 were stopped"
