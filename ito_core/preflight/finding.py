"""One preflight check's outcome: ok, skipped (what it needs is not there) or failed, as one line."""

from __future__ import annotations

from dataclasses import dataclass

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclass(frozen=True)
class Finding:
    check: str  # storage | inputs | slurm | metrics | shards | prefect
    status: str  # ok | skipped | failed
    message: str  # one line; a failure names the setting and the fix

    def line(self) -> str:
        return f"preflight {self.check}: {self.status}: {self.message}"

    @property
    def failed(self) -> bool:
        return self.status == FAILED


def ok(check: str, message: str) -> Finding:
    return Finding(check, OK, message)


def skipped(check: str, message: str) -> Finding:
    return Finding(check, SKIPPED, message)


def failed(check: str, message: str) -> Finding:
    return Finding(check, FAILED, " ".join(message.split()))  # one line, whatever the error text held
