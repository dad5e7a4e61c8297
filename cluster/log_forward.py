"""Which of a job's rank-0 log lines reach the orchestrator's logger (Prefect's API, its database), and how often.

Every warning and error passes at once. Progress lines (the ``ito_core`` INFO lines: a step's loss, a checkpoint)
pass at most once per ``every_s`` seconds: the newest one is held and sent when its turn comes, so a sweep of
hundreds of points writes a bounded number of log rows however fast its jobs log. The full rank logs stay in
the job's folder (``cluster.work_dir``); ``close`` names it and how many progress lines were not sent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

# The job processes' format (cluster/jobs.py configure_logging): "<date> <time>,<ms> LEVEL name: message"
FORMATTED = re.compile(r"^\S+ \S+ (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<message>.*)$")
# Lines written past the logging module: Python warnings ("...: UserWarning: ..."), tracebacks, a raised error
# (DeepSpeed's own "[WARNING]" lines too)
UNFORMATTED_PROBLEM = re.compile(r"\b\w*(Warning|Error|Exception)\b|^Traceback \(most recent call last\)|"
                                 r"\[(WARNING|ERROR|CRITICAL)\]")


class LogForwarder:
    """Feed it a job's new rank-0 lines; it logs warnings and errors at once and progress at a bounded rate."""

    def __init__(self, logger: logging.Logger | Any, *, job_id: str, every_s: float, pattern: str = "ito_core",
                 log_path: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.job_id, self.every_s, self.pattern = logger, job_id, every_s, pattern
        self.log_path, self.clock = log_path, clock
        self.sent_at = float("-inf")
        self.held: str | None = None  # the newest progress line not sent yet
        self.dropped = 0  # progress lines replaced by a newer one before their turn

    def feed(self, lines: Iterable[str]) -> None:
        for line in lines:
            level, message = self._classify(line)
            if level >= logging.WARNING:
                self.logger.log(level, "[job %s] %s", self.job_id, message)
            elif level == logging.INFO:
                if self.held is not None:
                    self.dropped += 1
                self.held = message
                self._send_due()
        self._send_due()  # time passed since the last line: the held one may be due

    def close(self) -> None:
        """The job ended: send the held progress line (the last step), and say where the rest is."""
        self._send_due(force=True)
        if self.dropped:
            self.logger.info("[job %s] %d progress lines not sent (one per %g s is); full rank logs: %s",
                             self.job_id, self.dropped, self.every_s, self.log_path or "the job's folder")

    def _send_due(self, *, force: bool = False) -> None:
        now = self.clock()
        if self.held is not None and (force or now - self.sent_at >= self.every_s):
            self.logger.info("[job %s] %s", self.job_id, self.held)
            self.held, self.sent_at = None, now

    def _classify(self, line: str) -> tuple[int, str]:
        """(level, message) of a line; level 0 for lines that are neither progress nor a problem."""
        if (found := FORMATTED.match(line)) is not None:
            level = logging.getLevelName(found["level"])
            level = level if isinstance(level, int) else logging.INFO
            if level >= logging.WARNING:
                return level, f"{found['name']}: {found['message']}"
            return (logging.INFO if self.pattern in line else 0), found["message"]
        if UNFORMATTED_PROBLEM.search(line):
            return logging.WARNING, line
        return (logging.INFO if self.pattern in line else 0), line.split(": ", 1)[-1]
