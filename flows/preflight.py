"""The preflight: what can be checked before any work starts is checked in seconds, before ``ito-sweep run``, ``plan``,
each stage command, a deployment run (the flow, before it submits anything) and ``serve``.

Checks (``CHECKS``): ``storage`` (credentials, bucket, one put + delete under a scratch key), ``inputs`` (data.input,
data.shards and the eval sets the eval tasks use: exist, non-empty), ``slurm`` (partition, account, QOS against the
cluster), ``shards`` (enough training shards for the ranks), ``metrics`` (report patterns match a metric), ``prefect``
(the server answers and accepts this client). A check whose prerequisite is missing (no SLURM client here) is
skipped and says so; one the user skips (``--skip-check NAME``, the flow's ``skip_checks``) says that. Every
finding is one line; a failure names the setting and the fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

from cluster.slurm_check import check_slurm
from flows.prefect_check import check_prefect_server
from ito_core.artifacts import train_data_key
from ito_core.config import RunConfig, as_dict
from ito_core.preflight import (
    PROBE_DEADLINE_S,
    Finding,
    check_inputs,
    check_report_metrics,
    check_shard_count,
    check_storage,
    failed,
    run_inputs,
    skipped,
)
from ito_core.storage import build_store

CHECKS = ("storage", "inputs", "slurm", "shards", "metrics", "prefect")
# Which checks each command runs ("flow": a deployment run, whose Prefect server is the one it runs on).
COMMAND_CHECKS = {
    "run": CHECKS, "plan": CHECKS[:-1], "flow": CHECKS[:-1], "prep": ("storage", "inputs", "slurm"),
    "train": ("storage", "inputs", "slurm", "shards"), "strip": ("storage",), "eval": ("storage", "inputs", "slurm"),
    "serve": ("prefect",),
}


class PreflightFailed(Exception):
    """One or more checks failed; ``findings`` holds every check's outcome."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        super().__init__("; ".join(f.line() for f in findings if f.failed))


def skip_set(skip: Collection[str]) -> set[str]:
    """The checks to skip; ``all`` skips every one. ``ValueError`` for an unknown name."""
    if unknown := sorted(set(skip) - {*CHECKS, "all"}):
        raise ValueError(f"skip_checks / --skip-check {unknown}: choose from {[*CHECKS, 'all']}")
    return set(CHECKS) if "all" in skip else set(skip)


def distinct(configs: list[RunConfig], key: Callable[[RunConfig], Any]) -> list[RunConfig]:
    """One config per distinct ``key`` (a grid's points mostly share their store, data and cluster)."""
    return list({repr(key(cfg)): cfg for cfg in configs}.values())


def _storage(configs: list[RunConfig], unreadable: set[str]) -> list[Finding]:
    """Each distinct store's finding; the roots that failed go to ``unreadable``."""
    found = []
    for cfg in distinct(configs, lambda c: as_dict(c)["storage"]):
        found.append(check_storage(cfg.storage))
        if found[-1].failed:
            unreadable.add(cfg.storage.root)
    return found


def _inputs(configs: list[RunConfig]) -> list[Finding]:
    found = []
    for first in distinct(configs, lambda c: c.storage.endpoint_url):
        same = [cfg for cfg in configs if cfg.storage.endpoint_url == first.storage.endpoint_url]
        inputs = list(dict.fromkeys(i for cfg in same for i in run_inputs(cfg)))
        found += check_inputs(inputs, endpoint_url=first.storage.endpoint_url)
    return found


def _slurm(configs: list[RunConfig]) -> list[Finding]:
    return [f for cfg in distinct(configs, lambda c: as_dict(c)["cluster"]) for f in check_slurm(cfg.cluster)]


def _shards(configs: list[RunConfig], unreadable: set[str]) -> list[Finding]:
    found = []
    for cfg in distinct(configs, lambda c: (train_data_key(c.data), c.cluster.nodes * c.cluster.tasks_per_node,
                                            c.storage.root)):
        storage = dataclasses.replace(cfg.storage, retry_deadline_s=PROBE_DEADLINE_S)
        found.append(check_shard_count(cfg, None if cfg.storage.root in unreadable else build_store(storage)))
    return found


def preflight(configs: list[RunConfig], command: str, skip: Collection[str] = ()) -> list[Finding]:
    """Every check of ``command`` on the grid's ``configs``, in ``CHECKS`` order; never raises for a finding."""
    skips, found, unreadable = skip_set(skip), [], set()
    runners = {"storage": lambda: _storage(configs, unreadable), "inputs": lambda: _inputs(configs),
               "slurm": lambda: _slurm(configs), "shards": lambda: _shards(configs, unreadable),
               "metrics": lambda: check_report_metrics(configs),
               "prefect": lambda: [check_prefect_server(needed=command == "serve")]}
    for name in COMMAND_CHECKS[command]:
        if name in skips:
            found.append(skipped(name, f"on request (--skip-check {name}, or the flow's skip_checks)"))
            continue
        try:
            found += runners[name]()
        except Exception as err:  # noqa: BLE001 - a check that cannot run is a finding, not a traceback
            found.append(failed(name, f"the check could not run ({type(err).__name__}: {err}); fix that, or skip the "
                                      f"check with --skip-check {name}"))
    return found


def require(findings: list[Finding]) -> list[Finding]:
    """``findings``, or ``PreflightFailed`` when one failed."""
    if any(f.failed for f in findings):
        raise PreflightFailed(findings)
    return findings
