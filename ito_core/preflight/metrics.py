"""``report.metrics`` and ``report.plot_metrics`` patterns match a metric the configured eval tasks record: a typo
would leave the report without those columns, silently. Default plot patterns are a menu (a task switched off
leaves its pattern unmatched) and are not held to it; a user's own pattern is."""

from __future__ import annotations

import fnmatch

from ito_core.config import PLOT_METRICS, RunConfig
from ito_core.eval.names import LOSS_COLUMNS, expected_metrics
from ito_core.preflight.finding import Finding, failed, ok

CHECK = "metrics"


def check_report_metrics(configs: list[RunConfig]) -> list[Finding]:
    names = list(dict.fromkeys(n for cfg in configs for n in expected_metrics(cfg.eval, method=cfg.method.name)))
    own_plots = [p for cfg in configs for p in cfg.report.plot_metrics if p not in PLOT_METRICS]
    patterns = {"report.metrics": ([p for cfg in configs for p in cfg.report.metrics], names),
                "report.plot_metrics": (own_plots, [*names, *LOSS_COLUMNS])}
    found = []
    for key, (wanted, valid) in patterns.items():
        for pattern in dict.fromkeys(wanted):
            if not any(fnmatch.fnmatchcase(name, pattern) for name in valid):
                found.append(failed(CHECK, f"config {key}: {pattern!r} matches no metric the eval tasks record; "
                                           f"fix the pattern ('*' matches any eval set: '*/acc1'); valid names: "
                                           f"{', '.join(valid) or 'none (every eval.* task is off)'}"))
    return found or [ok(CHECK, f"report patterns match the {len(names)} metric(s) the eval tasks record")]
