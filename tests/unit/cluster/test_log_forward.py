"""Bounded log traffic: progress reaches the logger at most once per ``every_s``, every warning and error at once."""

from __future__ import annotations

import logging

import pytest

from cluster.log_forward import LogForwarder


class Recorder:
    """A logger that keeps its calls (level, rendered message)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, str]] = []

    def log(self, level: int, msg: str, *args: object) -> None:
        self.calls.append((level, msg % args))

    def info(self, msg: str, *args: object) -> None:
        self.log(logging.INFO, msg, *args)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def line(level: str, name: str, message: str) -> str:
    return f"2026-12-07 14:00:00,000 {level} {name}: {message}"


def test_a_fast_job_sends_a_bounded_number_of_progress_lines_and_every_problem() -> None:
    logger, clock = Recorder(), Clock()
    forward = LogForwarder(logger, job_id="42", every_s=30.0, log_path="/work/42_0_log.err", clock=clock)
    problems = []
    # 10 minutes of a job logging 20 progress lines a second, in 1 s polls, a warning every 7 s, an error once
    for second in range(600):
        clock.now = float(second)
        batch = [line("INFO", "ito_core.train", f"step {second * 20 + i} loss 1.0") for i in range(20)]
        if second % 7 == 0:
            problems.append(line("WARNING", "ito_core.data.loader", f"skipped shard {second}"))
            batch.append(problems[-1])
        if second == 311:
            problems.append(line("ERROR", "deepspeed", "allreduce timed out"))
            batch.append(problems[-1])
        forward.feed(batch)
    forward.close()

    progress = [msg for level, msg in logger.calls if level == logging.INFO and "loss" in msg]
    assert len(progress) <= 600 / 30 + 2  # one per 30 s, plus the first and the last
    assert progress[-1].endswith("step 11999 loss 1.0"), "the last step is sent when the job ends"
    sent = [msg for level, msg in logger.calls if level >= logging.WARNING]
    assert len(sent) == len(problems) and all(p.split(": ", 1)[1] in s for p, s in zip(problems, sent, strict=True))
    assert [level for level, msg in logger.calls if "allreduce" in msg] == [logging.ERROR]
    summary = logger.calls[-1][1]
    assert "not sent" in summary and "/work/42_0_log.err" in summary


def test_zero_sends_every_progress_line() -> None:
    logger = Recorder()
    forward = LogForwarder(logger, job_id="7", every_s=0.0, clock=Clock())
    forward.feed([line("INFO", "ito_core.train", f"step {i}") for i in range(50)])
    forward.close()
    assert [msg for _, msg in logger.calls] == [f"[job 7] step {i}" for i in range(50)]


@pytest.mark.parametrize("raw", ["/usr/lib/python3/site.py:1: UserWarning: a thing",
                                 "Traceback (most recent call last):", "RuntimeError: boom",
                                 "[2026-12-07 14:00:00] [WARNING] [engine.py:1] zero stage"])
def test_lines_written_past_logging_that_report_problems_pass(raw: str) -> None:
    logger = Recorder()
    LogForwarder(logger, job_id="1", every_s=1e9, clock=Clock()).feed([raw])
    assert logger.calls == [(logging.WARNING, f"[job 1] {raw}")]


def test_other_loggers_info_lines_are_not_sent() -> None:
    logger = Recorder()
    forward = LogForwarder(logger, job_id="1", every_s=0.0, clock=Clock())
    forward.feed([line("INFO", "deepspeed", "ZeRO stage 2 optimizer"), "plain output", ""])
    forward.close()
    assert logger.calls == []
