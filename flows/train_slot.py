"""A training task's slot of the server-wide ``ito-train`` limit, taken so that a Prefect server restart does not
fail the sweep.

Prefect's task engine takes the slots of a task's tags itself, in one call with no retry beyond its HTTP
client's (about a minute): a task that starts while the server restarts then ends ``Pending`` and the flow run
fails with ``ConcurrencySlotAcquisitionError``. So ``train`` carries no tag; it takes the slot of the limit that
``prefect concurrency-limit create ito-train N`` makes (``tag:ito-train``) through ``prefect.concurrency``, and
retries with backoff for up to ``cluster.prefect_retry_s`` while the server cannot be reached. A slot is held
under a lease the server lets expire when nobody renews it; so a release that fails (the server is down when
training ends) is logged, not raised, and the slot frees itself once the lease runs out. The server must keep
leases across its own restarts (``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE``, docs/CLUSTER.md), else the
slots held at a restart stay taken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any
from uuid import UUID

import tenacity
from prefect.client.schemas.objects import ConcurrencyLeaseHolder
from prefect.concurrency._sync import concurrency  # the engine's own call: it can keep the no-limit warning quiet
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError

TRAIN_TAG = "ito-train"
LIMIT_NAME = f"tag:{TRAIN_TAG}"  # the v2 name of the tag limit ``prefect concurrency-limit create ito-train`` makes
# How long the server may miss a renewal before it frees the slot: a restart shorter than this keeps it (Prefect's
# engine uses 60 s; a longer lease only delays freeing the slot of a flow process that died).
LEASE_S = 300.0
BACKOFF_MAX_S = 30.0


def take_slot(task_run_id: UUID) -> AbstractContextManager[None]:
    """One slot of ``tag:ito-train`` for the task run, held under a renewed lease while the ``with`` runs
    (nothing to hold when no such limit exists)."""
    return concurrency(LIMIT_NAME, occupy=1, lease_duration=LEASE_S, strict=False, suppress_warnings=True,
                       holder=ConcurrencyLeaseHolder(type="task_run", id=task_run_id),
                       raise_on_lease_renewal_failure=False)


@contextmanager
def train_slot(task_run_id: UUID, logger: logging.Logger | Any, *, retry_s: float,
               take: Callable[[UUID], AbstractContextManager[None]] = take_slot,
               sleep: Callable[[float], None] = tenacity.nap.sleep) -> Iterator[None]:
    """Hold the task run's ``ito-train`` slot while the ``with`` runs. Taking it is retried with exponential
    backoff for up to ``retry_s`` seconds while the server cannot be reached (``take`` raises
    ``ConcurrencySlotAcquisitionError``); a failed release is logged: the lease frees the slot."""
    def log_retry(state: tenacity.RetryCallState) -> None:
        logger.warning("train: Prefect server unreachable while taking an %s slot (%s); retrying in %.0f s",
                       TRAIN_TAG, state.outcome.exception() if state.outcome else "?", state.upcoming_sleep)

    slot: AbstractContextManager[None] | None = None
    for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception_type(ConcurrencySlotAcquisitionError),
                                     stop=tenacity.stop_after_delay(retry_s), reraise=True, sleep=sleep,
                                     wait=tenacity.wait_exponential(multiplier=1, max=BACKOFF_MAX_S),
                                     before_sleep=log_retry):
        with attempt:
            slot = take(task_run_id)
            slot.__enter__()  # raises before anything is held: a failed try holds no slot
    assert slot is not None
    try:
        yield
    finally:
        try:
            slot.__exit__(None, None, None)
        except Exception as err:  # the server is down: its lease expiry frees the slot
            logger.warning("train: %s slot not released (%s); the server frees it when its lease ends (%.0f s)",
                           TRAIN_TAG, err, LEASE_S)
