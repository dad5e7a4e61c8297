"""Wait for a submitit job while forwarding its rank-0 log lines (per-step progress) to a logger."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import submitit


def _new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    if not path.exists():
        return [], offset
    with path.open("r", errors="replace") as handle:
        handle.seek(offset)
        chunk = handle.read()
    complete, _, _ = chunk.rpartition("\n")
    return (complete.splitlines() if complete else []), offset + (len(complete) + 1 if complete else 0)


def wait_streaming(job: submitit.Job, logger: logging.Logger | Any, *, poll_s: float = 1.0,
                   pattern: str = "ito_core") -> Any:
    """Block until ``job`` ends; log the lines of its rank-0 stderr that contain ``pattern``."""
    offset = 0
    while True:
        done = job.done()
        lines, offset = _new_lines(Path(job.paths.stderr), offset)
        for line in lines:
            if pattern in line:
                logger.info("[job %s] %s", job.job_id, line.split(": ", 1)[-1])
        if done:
            return job.results()[0]  # rank 0's result (a multi-task job returns one per task)
        time.sleep(poll_s)
