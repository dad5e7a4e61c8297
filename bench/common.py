"""What every benchmark shares: the machine record (and how busy it was), and the worker-process driver."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model (as lscpu's ``Model name``), core count, 1-minute load average, Python version."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_1min": os.getloadavg()[0],
            "python": platform.python_version()}


def describe(info: dict[str, Any]) -> str:
    return f"{info['cpu']}, {info['cores']} cores, load average {info['loadavg_1min']:.2f}, Python {info['python']}"


class Worker:
    """One side of a comparison in its own process (own interpreter, own peak RSS), driven one command per
    line over stdin; it answers one JSON line per command, the first (``ready``) before any command."""

    def __init__(self, argv: list[str], *, threads: int = 1, env: dict[str, str] | None = None) -> None:
        # PASSIVE: an idle worker's OpenMP threads must not spin on the cores while the next worker is timed.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE",
               "PYTHONWARNINGS": "ignore", **(env or {})}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self.ask(None)

    def ask(self, cmd: str | None) -> dict[str, Any]:
        if cmd is not None:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.proc.args[:3]} died (exit {self.proc.wait()})")
        return json.loads(line)

    def close(self, last: str | None = None) -> dict[str, Any] | None:
        """End the worker; with ``last``, send that command first and return its answer."""
        answer = self.ask(last) if last is not None else None
        self.proc.stdin.close()
        self.proc.wait()
        return answer


def use_multinode_cluster() -> None:
    """Point submitit's sbatch/squeue at the multi-node cluster of cluster/mn-up.sh, with CPU DeepSpeed and one
    thread per rank; exit naming the set-up command when no such cluster is up."""
    conf = Path(os.environ.get("MN_DIR", "/tmp/mn-slurm")) / "slurm.conf"
    if not conf.is_file():
        raise SystemExit(f"no multi-node cluster at {conf}: run `bash cluster/mn-up.sh` first (root)")
    os.environ["SLURM_CONF"] = str(conf)
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
