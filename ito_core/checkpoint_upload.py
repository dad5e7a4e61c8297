"""One checkpoint transfer running beside training on a thread: a rank writing its files from a snapshot
(``ito_core.checkpoint_snapshot``), or the node's local rank 0 uploading what its ranks wrote.

An upload is I/O (boto3 sends the files from its own threads and releases the GIL while it waits on sockets), so
a thread is enough: no second process, no copy of the files. The thread is a daemon: a rank that fails or is killed
does not wait for it, and the tag it was writing or uploading stays uncommitted (a resume never picks it).
``wait`` hands back whether it succeeded instead of raising, because every rank must first learn, by one
collective, that some rank's write or node's upload failed (``ito_core.checkpoint.CheckpointSaver``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundTransfer:
    """Runs ``send()`` on a daemon thread from construction; ``what`` names it in logs and errors."""

    def __init__(self, what: str, send: Callable[[], None]) -> None:
        self.what, self.error = what, None
        self.started = time.perf_counter()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, args=(send,), name=what, daemon=True)
        self._thread.start()

    def _run(self, send: Callable[[], None]) -> None:
        try:
            send()
        except BaseException as err:  # noqa: BLE001 - handed to the training thread, which raises it
            self.error = err
        self.finished = time.perf_counter()

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> tuple[bool, float]:
        """Block until the transfer ended; (succeeded, seconds this call waited). The error stays in ``error``."""
        start = time.perf_counter()
        self._thread.join()
        waited = time.perf_counter() - start
        if self.error is not None:
            log.error("%s failed after %.1f s: %s: %s", self.what, self.seconds, type(self.error).__name__,
                      self.error)
        return self.error is None, waited

    @property
    def seconds(self) -> float:
        """How long the transfer took (so far, while it runs)."""
        return (self.finished or time.perf_counter()) - self.started
