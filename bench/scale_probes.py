"""The scale benchmark's meters: flow-process CPU, RSS and threads; slurmctld's RPC counts (``sdiag``); Prefect API
requests (the server's access log); PostgreSQL rows and size. SLURM client calls are counted by
``tests/fixtures/slurm_counting.py`` (a wrapper on PATH), which the suite's scale test shares."""

from __future__ import annotations

import collections
import contextlib
import re
import subprocess
import threading
from pathlib import Path
from typing import Any

import psutil

# uvicorn's access log line: 'INFO:     10.231.0.1:40312 - "POST /api/logs/ HTTP/1.1" 201'
ACCESS = re.compile(r'"(?P<method>[A-Z]+) /api/(?P<path>[^ ?"]*)[^"]*" (?P<status>\d{3})')
# Prefect's tables a sweep writes into, for the row counts
TABLES = ("flow_run", "flow_run_state", "task_run", "task_run_state", "log", "artifact", "artifact_collection",
          "events", "event_resources", "deployment", "variable")


class FlowProcessSampler(threading.Thread):
    """Every ``every_s``: the processes under ``root_pid`` other than itself (the flow runs ``ito-sweep serve``
    starts; jobs run under slurmd, not here): peak RSS, peak threads, and CPU seconds as last seen (a process's
    CPU counts until it exits; the sweep's flow run is the long-lived one)."""

    def __init__(self, root_pid: int, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.every_s, self.stopped = root_pid, every_s, threading.Event()
        self.cpu_s: dict[int, float] = {}
        self.peak_rss_mb = 0.0
        self.peak_threads = 0
        self.serve_cpu_s = 0.0

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        try:
            root = psutil.Process(self.root_pid)  # mnexec execs down to ``ito-sweep serve`` itself
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        flow, serve = [], None
        for proc in tree:
            try:
                cmd = " ".join(proc.cmdline())
                if cmd.endswith("ito-sweep serve"):
                    serve = proc
                elif "python" in cmd:
                    flow.append((proc, proc.memory_info().rss, proc.num_threads(), sum(proc.cpu_times()[:2])))
            except psutil.Error:
                continue
        with contextlib.suppress(psutil.Error):
            if serve is not None:
                self.serve_cpu_s = sum(serve.cpu_times()[:2])
        self.cpu_s.update({proc.pid: cpu for proc, *_, cpu in flow})
        self.peak_rss_mb = max(self.peak_rss_mb, sum(rss for _, rss, _, _ in flow) / 2**20)
        self.peak_threads = max(self.peak_threads, sum(threads for _, _, threads, _ in flow))

    def stop(self) -> dict[str, Any]:
        self.sample()
        self.stopped.set()
        return {"flow_cpu_s": round(sum(self.cpu_s.values()), 2), "serve_cpu_s": round(self.serve_cpu_s, 2),
                "flow_peak_rss_mb": round(self.peak_rss_mb, 1), "flow_peak_threads": self.peak_threads,
                "flow_processes": len(self.cpu_s)}


def sdiag_rpcs(slurm_conf: str) -> dict[str, int]:
    """slurmctld's RPC counts by message type since its start or the last ``sdiag -r``."""
    out = subprocess.run(["sdiag"], capture_output=True, text=True, check=True,
                         env={"SLURM_CONF": slurm_conf, "PATH": "/usr/bin:/bin"}).stdout
    section = out.split("Remote Procedure Call statistics by message type", 1)[-1]
    section = section.split("Remote Procedure Call statistics by user", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^\s+(\w+)\s+\(\s*\d+\)\s+count:(\d+)", section, re.M)}


def sdiag_reset(slurm_conf: str) -> None:
    subprocess.run(["sdiag", "-r"], capture_output=True, check=True, env={"SLURM_CONF": slurm_conf,
                                                                         "PATH": "/usr/bin:/bin"})


def prefect_requests(server_log: Path) -> dict[str, Any]:
    """API requests in the server's access log (``PREFECT_SERVER_LOGGING_LEVEL=INFO``), by method and route."""
    kinds: collections.Counter[str] = collections.Counter()
    statuses: collections.Counter[str] = collections.Counter()
    for found in ACCESS.finditer(server_log.read_text(errors="replace")):
        route = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "{id}", found["path"]).rstrip("/")
        kinds[f"{found['method']} /{route}"] += 1
        statuses[found["status"]] += 1
    return {"total": sum(kinds.values()), "by_status": dict(statuses), "top": dict(kinds.most_common(15))}


def database_stats(psql: Any, database: str) -> dict[str, Any]:
    """Row counts of Prefect's tables and the database's size (``psql(sql)`` runs SQL as the superuser)."""
    rows = {}
    for table in TABLES:
        try:
            rows[table] = int(psql(f"select count(*) from {table}", database=database).strip())
        except RuntimeError:
            continue  # a table this Prefect version does not have
    size = int(psql(f"select pg_database_size('{database}')").strip())
    return {"rows": rows, "size_mb": round(size / 2**20, 2)}


def slurmd_rss_mb(mn_dir: Path) -> dict[str, Any]:
    """The multi-node cluster's slurmd processes (one per node): their count and RSS."""
    rss = []
    for pid_file in sorted((mn_dir / "run").glob("slurmd-*.pid")):
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            rss.append(psutil.Process(int(pid_file.read_text())).memory_info().rss / 2**20)
    return {"slurmd": len(rss), "rss_mb_total": round(sum(rss), 1), "rss_mb_max": round(max(rss, default=0), 1)}

