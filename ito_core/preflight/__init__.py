"""Preflight checks that need no Prefect or scheduler: the store, the inputs, the report's metric patterns and the
training shard count. ``cluster.slurm_check`` checks SLURM settings, ``flows.prefect_check`` the Prefect server, and
``flows.preflight`` runs them all before a command starts any work."""

from ito_core.preflight.finding import FAILED, OK, SKIPPED, Finding, failed, ok, skipped
from ito_core.preflight.inputs import Input, check_inputs, run_inputs
from ito_core.preflight.metrics import check_report_metrics
from ito_core.preflight.shards import check_shard_count
from ito_core.preflight.storage import PROBE_DEADLINE_S, check_storage

__all__ = ["FAILED", "OK", "PROBE_DEADLINE_S", "SKIPPED", "Finding", "Input", "check_inputs", "check_report_metrics",
           "check_shard_count", "check_storage", "failed", "ok", "run_inputs", "skipped"]
