"""The ito-train slot outlasts a Prefect server that cannot be reached for a while, and is never held twice."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID, uuid4

import pytest
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

from flows.train_slot import train_slot

RUN = uuid4()


class FakeServer:
    """Refuses the first ``down_for`` acquisitions as an unreachable server does; counts what is held."""

    def __init__(self, down_for: int, release_fails: bool = False) -> None:
        self.down_for, self.release_fails = down_for, release_fails
        self.tries, self.held, self.released = 0, 0, 0

    @contextmanager
    def take(self, task_run_id: UUID) -> Iterator[None]:
        assert task_run_id == RUN
        self.tries += 1
        if self.tries <= self.down_for:
            raise ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['tag:ito-train']")
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1
            if self.release_fails:
                raise ConnectionError("All connection attempts failed")
            self.released += 1


def test_taking_the_slot_is_retried_until_the_server_answers(caplog: pytest.LogCaptureFixture) -> None:
    server, naps = FakeServer(down_for=3), []
    with train_slot(RUN, logging.getLogger("t"), retry_s=600, take=server.take, sleep=naps.append):
        assert (server.tries, server.held) == (4, 1)
    assert (server.held, server.released) == (0, 1), "released once, after the body"
    assert naps == [1, 2, 4], "exponential backoff between tries"
    assert caplog.text.count("Prefect server unreachable while taking an ito-train slot") == 3


def test_a_server_down_longer_than_slot_retry_s_fails_the_task() -> None:
    server = FakeServer(down_for=10)
    with (pytest.raises(ConcurrencySlotAcquisitionError, match="tag:ito-train"),
          train_slot(RUN, logging.getLogger("t"), retry_s=0, take=server.take, sleep=lambda s: None)):
        pytest.fail("the body ran without a slot")
    assert (server.tries, server.held) == (1, 0)


def test_a_failed_release_is_logged_and_the_result_stands(caplog: pytest.LogCaptureFixture) -> None:
    server = FakeServer(down_for=0, release_fails=True)
    with train_slot(RUN, logging.getLogger("t"), retry_s=600, take=server.take, sleep=lambda s: None):
        result = "trained"
    assert result == "trained" and server.held == 0
    assert "ito-train slot not released (All connection attempts failed); the server frees it" in caplog.text


def test_the_slot_is_released_when_the_body_fails() -> None:
    server = FakeServer(down_for=1)
    with (pytest.raises(RuntimeError, match="job failed"),
          train_slot(RUN, logging.getLogger("t"), retry_s=600, take=server.take, sleep=lambda s: None)):
        raise RuntimeError("job failed")
    assert (server.held, server.released) == (0, 1)
