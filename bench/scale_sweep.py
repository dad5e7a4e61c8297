"""A sweep at team scale, live: N grid points of real tiny trainings (a few steps each, embedded data) through
``prefect deployment run 'ito-sweep/slurm'`` on the multi-node cluster (cluster/mn-up.sh), against a Prefect server
on PostgreSQL (cluster/postgres-up.sh), with artifacts on an S3 server (rclone) that every node reaches.

Measured: the flow process's CPU per point, peak RSS and threads; Prefect API requests per point (the server's
access log); PostgreSQL rows and size after the sweep, log rows per point; SLURM client calls per minute (a
counting wrapper on the flow's PATH) and slurmctld's RPCs (``sdiag``); S3 requests per point (a counting proxy
in front of the S3 server). ``--faults`` adds, mid-sweep, one after another: slurmctld restarted, the Prefect
server restarted, the S3 server down for 30 s, one node's slurmd and jobs killed.

As root (network namespaces, PostgreSQL), with the project installed in the venv that runs this:

    python bench/scale_sweep.py --points 16 --nodes 4 --max-concurrent-train 16 --json docs/benchmarks/x.json
    python bench/scale_sweep.py --points 128 --nodes 16 --max-concurrent-train 16 --faults --json ...
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]

from common import describe, machine  # noqa: E402
from counting_proxy import CountingProxy  # noqa: E402
from fixtures.multinode_cluster import bridge_address, restart_slurmctld  # noqa: E402
from fixtures.postgres import psql  # noqa: E402
from fixtures.prefect_server import PrefectServer, serving, venv_script  # noqa: E402
from fixtures.s3_server import running_s3_server, unused_port  # noqa: E402
from fixtures.scale_points import scale_overrides  # noqa: E402
from fixtures.slurm_counting import slurm_calls, slurm_wrappers  # noqa: E402
from scale_probes import (  # noqa: E402
    FlowProcessSampler,
    database_stats,
    prefect_requests,
    sdiag_reset,
    sdiag_rpcs,
    slurmd_rss_mb,
)

MN_DIR = Path(os.environ.get("MN_DIR", "/tmp/mn-slurm"))


def bring_up(nodes: int, database: str) -> tuple[str, str]:
    """The multi-node cluster (MN_NODES=nodes) and a PostgreSQL database; returns (host address, database URL)."""
    up = subprocess.run(["bash", str(ROOT / "cluster/mn-up.sh")], env={**os.environ, "MN_NODES": str(nodes)},
                        capture_output=True, text=True, check=False)
    if up.returncode != 0:
        sys.exit(f"cluster/mn-up.sh failed:\n{up.stdout}\n{up.stderr}")
    print(up.stdout.strip().splitlines()[-1], flush=True)
    pg = subprocess.run(["bash", str(ROOT / "cluster/postgres-up.sh")], env={**os.environ, "PG_DB": database},
                        capture_output=True, text=True, check=False)
    if pg.returncode != 0:
        sys.exit(f"cluster/postgres-up.sh failed:\n{pg.stderr}")
    return bridge_address(), pg.stdout.strip().splitlines()[-1]


class Faults(threading.Thread):
    """One fault every ``gap_s`` from ``start_s`` on, while the sweep runs; notes when each happened."""

    def __init__(self, *, server: PrefectServer, s3: Any, nodes: int, work: Path, start_s: float,
                 gap_s: float) -> None:
        super().__init__(daemon=True)
        self.server, self.s3, self.nodes, self.work, self.start_s, self.gap_s = server, s3, nodes, work, start_s, gap_s
        self.killed = ""
        self.done: list[dict[str, Any]] = []
        self.t0 = time.monotonic()

    def run(self) -> None:
        steps = [("slurmctld restarted", lambda: restart_slurmctld(MN_DIR)),
                 ("Prefect server restarted", self.restart_prefect), ("S3 server down 30 s", self.s3_down),
                 ("a node running a job killed", self.kill_node)]
        time.sleep(self.start_s)
        for name, action in steps:
            began = time.monotonic() - self.t0
            try:
                action()
                self.done.append({"fault": name, "at_s": round(began, 1), "ok": True})
            except Exception as err:  # a benchmark records what failed and goes on
                self.done.append({"fault": name, "at_s": round(began, 1), "ok": False, "error": repr(err)})
            print(f"fault: {self.done[-1]}", flush=True)
            time.sleep(self.gap_s)

    def restart_prefect(self) -> None:
        process = self.server.process
        assert process is not None and process.proc is not None
        process.stop()
        process.start(self.server.healthy, deadline_s=600)  # same port and database; slow on a loaded machine

    def s3_down(self) -> None:
        self.s3.stop()
        time.sleep(30)
        self.s3.start()

    def restore_node(self) -> None:
        """Start the killed node's slurmd again (ReturnToService=2 puts it back): leave the cluster as found."""
        if self.killed:
            subprocess.run([str(MN_DIR / "mnexec"), self.killed, "slurmd", "-N", self.killed], check=False)

    def kill_node(self) -> None:
        """SIGKILL everything on a node that runs one of this sweep's jobs (slurmd, slurmstepd, the job's ranks), and
        none of anyone else's (other sessions' tests share the cluster)."""
        queue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%N %Z"], capture_output=True, text=True, check=True,
                               env={**os.environ, "SLURM_CONF": str(MN_DIR / "slurm.conf")}).stdout
        jobs = [line.split(maxsplit=1) for line in queue.splitlines() if line.strip()]
        others = {node for nodes, folder in jobs if not folder.startswith(str(self.work)) for node in expand(nodes)}
        busy = [nodes for nodes, folder in jobs if folder.startswith(str(self.work)) and nodes not in others
                and "," not in nodes and "[" not in nodes]
        self.killed = busy[-1] if busy else f"mn{self.nodes}"
        pids = subprocess.run(["ip", "netns", "pids", self.killed], capture_output=True, text=True,
                              check=True).stdout.split()
        subprocess.run(["kill", "-KILL", *pids], check=False)
        self.done.append({"fault": f"killed node {self.killed}", "running_jobs_of_this_sweep": len(busy)})


def expand(nodes: str) -> list[str]:
    """``mn[1-2]`` -> mn1, mn2 (scontrol's own expansion)."""
    out = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=False,
                         env={**os.environ, "SLURM_CONF": str(MN_DIR / "slurm.conf")}).stdout
    return out.split() or [nodes]


def report_rows(client: Any, bucket: str) -> list[dict[str, str]]:
    """The sweep report's rows; none when the flow run failed before writing it."""
    try:
        report = client.get_object(Bucket=bucket, Key="store/sweeps/scale/report.csv")["Body"].read()
    except client.exceptions.NoSuchKey:
        return []
    return list(csv.DictReader(io.StringIO(report.decode())))


def final_state(server: PrefectServer, run_id: str, *, timeout_s: float) -> str:
    """The flow run's final state type, asked again while the server is down (restarted by a fault)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return server.wait_final(run_id, timeout_s=max(1.0, deadline - time.monotonic())).type.value
        except TimeoutError:
            raise
        except Exception:  # connection refused, 503 while the server starts: ask again
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    database = f"scale_{int(time.time())}"
    address, db_url = bring_up(args.nodes, database)
    slurm_conf = str(MN_DIR / "slurm.conf")
    os.environ["PREFECT_SERVER_LOGGING_LEVEL"] = "INFO"  # the server's access log: one line per API request
    (work / "s3").mkdir(parents=True, exist_ok=True)
    with running_s3_server(work / "s3", host=address) as s3:
        proxy = CountingProxy(listen_host=address, listen_port=unused_port(), upstream=s3.endpoint_url).start()
        bucket = s3.new_bucket("scale")
        server = PrefectServer(home=work / "prefect", host=address, database_url=db_url)
        (work / "prefect").mkdir()
        server.start()
        wrappers, calls_log = slurm_wrappers(work / "slurm-wrappers")
        aws = {"AWS_ACCESS_KEY_ID": s3.key, "AWS_SECRET_ACCESS_KEY": s3.secret, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "AWS_EC2_METADATA_DISABLED": "true"}
        login = (str(MN_DIR / "mnexec"), "mnctl")
        try:
            with serving(server, work, deployments=("slurm",), on=login,
                         PATH=f"{wrappers}:{os.environ['PATH']}", **aws) as served:
                sampler = FlowProcessSampler(served.proc.pid)
                sampler.start()
                overrides = scale_overrides(points=args.points, steps=args.steps, work_dir=work / "jobs",
                                            endpoint_url=proxy.url, progress_every_s=args.progress_every_s)
                params = {"overrides": overrides, "sweep_name": "scale", "storage_root": f"s3://{bucket}/store",
                          "max_concurrent_train": args.max_concurrent_train}
                sdiag_reset(slurm_conf)
                slurmd = slurmd_rss_mb(MN_DIR)
                s3_before = proxy.total()
                faults = (Faults(server=server, s3=s3, nodes=args.nodes, work=work, start_s=args.fault_start_s,
                                 gap_s=args.fault_gap_s) if args.faults else None)
                if faults:
                    faults.start()
                t0 = time.monotonic()
                code, output, run_id = server.run_deployment("ito-sweep/slurm", params, timeout_s=args.timeout_s)
                # the CLI's --watch can give up while the server restarts (a fault): the run's own state decides
                final = first = final_state(server, run_id, timeout_s=args.timeout_s)
                if final != "COMPLETED" and args.faults:  # the bar: ok in the run or after one retry
                    retry = subprocess.run([venv_script("prefect"), "flow-run", "retry", run_id], env=server.env(),
                                           capture_output=True, text=True, check=False)
                    print(f"flow run {first}: prefect flow-run retry -> exit {retry.returncode}", flush=True)
                    final = final_state(server, run_id, timeout_s=args.timeout_s)
                elapsed = time.monotonic() - t0
                flow = sampler.stop()
                if faults:
                    faults.join(timeout=120)
                    faults.restore_node()
                serve_tail = served.log_tail(6000)
            rpcs = sdiag_rpcs(slurm_conf)
            rows = report_rows(s3.client, bucket)
            db = database_stats(psql, database)
            [log_rows] = psql(f"select count(*) from log where flow_run_id = '{run_id}'", database=database).split()
        finally:
            server.stop()
            proxy_counts = proxy.snapshot()
    n = args.points
    result = {
        "bench": "scale_sweep", "machine": machine(), "command": " ".join(sys.argv),
        "params": {"points": n, "nodes": args.nodes, "max_concurrent_train": args.max_concurrent_train,
                   "steps": args.steps, "progress_every_s": args.progress_every_s, "faults": bool(args.faults)},
        "cluster": slurmd, "exit_code": code, "final_state": final, "first_final_state": first,
        "wall_s": round(elapsed, 1),
        "points_ok": sum(r.get("status") == "ok" for r in rows), "report_rows": len(rows),
        "flow_process": {**flow, "cpu_s_per_point": round(flow["flow_cpu_s"] / n, 3)},
        "prefect": {**(api := prefect_requests(work / "prefect" / "server.log")),
                    "per_point": round(api["total"] / n, 1)},
        "database": {**db, "log_rows_this_run": int(log_rows), "log_rows_per_point": round(int(log_rows) / n, 1)},
        "slurm_client_calls": slurm_calls(calls_log, elapsed_s=elapsed),
        "slurmctld_rpcs": {"total": sum(rpcs.values()), "per_min": round(sum(rpcs.values()) / elapsed * 60, 1),
                           "by_type": dict(sorted(rpcs.items(), key=lambda kv: -kv[1]))},
        "s3": {**proxy_counts, "total": proxy_counts["total"] - s3_before,
               "per_point": round((proxy_counts["total"] - s3_before) / n, 1)},
        "faults": faults.done if faults else [],
    }
    if final != "COMPLETED" or result["points_ok"] != n:
        result["output_tail"] = (output[-4000:] + "\n--- served ---\n" + serve_tail)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=16)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--max-concurrent-train", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--progress-every-s", type=float, default=30.0)
    parser.add_argument("--faults", action="store_true", help="the four faults, mid-sweep")
    parser.add_argument("--fault-start-s", type=float, default=60.0)
    parser.add_argument("--fault-gap-s", type=float, default=45.0)
    parser.add_argument("--timeout-s", type=int, default=3600)
    parser.add_argument("--keep", help="keep the work folder here (default: a temporary one, deleted)")
    parser.add_argument("--json", help="write the record here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("scale_sweep: run as root (cluster/mn-up.sh needs network namespaces, postgres-up.sh root)")
    print(describe(machine()), flush=True)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        result = run(args, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="scale-sweep-") as tmp:
            os.chmod(tmp, 0o755)
            result = run(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
