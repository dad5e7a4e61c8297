"""``cluster.partition``, ``cluster.account`` and ``cluster.qos`` checked against the cluster before any job is
submitted: ``sinfo`` lists the partitions, ``sacctmgr`` the user's associations (accounts and their QOS), and
``sbatch --test-only`` asks the controller whether it would take the training job's shape (nodes, tasks, CPUs,
GPUs, memory, time), without submitting anything. Without a SLURM client here the check is skipped; without an
accounting database, only its account/QOS part."""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess

from ito_core.config import ClusterConfig
from ito_core.preflight.finding import Finding, failed, ok, skipped

CHECK = "slurm"
QUERY_TIMEOUT_S = 10
# sbatch --test-only's refusal -> the settings behind it (first match wins)
REFUSALS = (("partition", "cluster.partition"), ("account", "cluster.account"), ("qos", "cluster.qos"),
            ("time limit", "cluster.timeout_min"),
            ("", "cluster.nodes / tasks_per_node / cpus_per_task / gpus_per_node / mem_gb / constraint"))


def _query(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, the last line of stderr) of a SLURM client command."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=QUERY_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]} did not answer in {QUERY_TIMEOUT_S} s"
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, done.stdout, lines[-1] if lines else f"exit code {done.returncode}"


def check_slurm(cfg: ClusterConfig) -> list[Finding]:
    if cfg.kind != "slurm":
        return [skipped(CHECK, f"cluster.kind={cfg.kind}: no partition, account or QOS to check")]
    if shutil.which("sinfo") is None:
        return [skipped(CHECK, "no SLURM client (sinfo) on this host; cluster.partition/account/qos are checked "
                               "where jobs are submitted from")]
    code, out, err = _query("sinfo", "-h", "-o", "%P")
    if code:
        return [failed(CHECK, f"cluster.kind=slurm: sinfo cannot reach the SLURM controller ({err}); run on a SLURM "
                              "login node, or use cluster=local")]
    names = out.split()
    partitions = [name.rstrip("*") for name in names]
    default = next((name.rstrip("*") for name in names if name.endswith("*")), "")
    found, note = _partition_problems(cfg.partition, partitions, default), ""
    if not found:
        found, note = _association_problems(cfg)
        found = found or _test_only(cfg)
    return found or [ok(CHECK, f"partition {cfg.partition or default!r}"
                               f"{f', account {cfg.account!r}' if cfg.account else ''}"
                               f"{f', QOS {cfg.qos!r}' if cfg.qos else ''} accepted by sbatch --test-only{note}")]


def _partition_problems(partition: str, partitions: list[str], default: str) -> list[Finding]:
    if not partition:
        return [] if default else [failed(CHECK, f"config cluster.partition is empty and this cluster has no default "
                                                 f"partition; set cluster.partition to one of {partitions}")]
    return [failed(CHECK, f"config cluster.partition={partition!r}: no partition {name!r} on this cluster; set it to "
                          f"one of {partitions}") for name in partition.split(",") if name not in partitions]


def _association_problems(cfg: ClusterConfig) -> tuple[list[Finding], str]:
    """Account and QOS against the user's associations: (problems, a note when they could not be read)."""
    if not (cfg.account or cfg.qos):
        return [], ""
    user = os.environ.get("USER") or getpass.getuser()
    code, out, err = _query("sacctmgr", "-nP", "show", "assoc", "where", f"user={user}", "format=account,qos")
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    if code or not rows:
        return [], f" (associations not checked: {err if code else f'none listed for user {user}'})"
    accounts = sorted({account for account, _ in rows})
    if cfg.account and cfg.account not in accounts:
        return [failed(CHECK, f"config cluster.account={cfg.account!r}: user {user} has no association with it; set "
                              f"cluster.account to one of {accounts}")], ""
    allowed = sorted({q for account, qos in rows if account == cfg.account or not cfg.account
                      for q in qos.split(",") if q})
    if cfg.qos and allowed and cfg.qos not in allowed:
        return [failed(CHECK, f"config cluster.qos={cfg.qos!r}: not allowed for user {user}"
                              f"{f' in account {cfg.account!r}' if cfg.account else ''}; set cluster.qos to one of "
                              f"{allowed}")], ""
    return [], ""


def sbatch_test_args(cfg: ClusterConfig) -> list[str]:
    """The training job's shape as sbatch options (as ``cluster.executors.slurm.slurm_parameters`` submits it)."""
    args = [f"--nodes={cfg.nodes}", f"--ntasks-per-node={cfg.tasks_per_node}", f"--cpus-per-task={cfg.cpus_per_task}",
            f"--time={cfg.timeout_min}"]
    optional = {"gpus-per-node": cfg.gpus_per_node, "mem": f"{cfg.mem_gb}G" if cfg.mem_gb else "",
                "partition": cfg.partition, "account": cfg.account, "qos": cfg.qos, "constraint": cfg.constraint}
    args += [f"--{name}={value}" for name, value in optional.items() if value]
    extra = {str(k).replace("_", "-"): v for k, v in cfg.extra_sbatch.items()}
    return args + [f"--{name}" if value is True else f"--{name}={value}" for name, value in extra.items()]


def _test_only(cfg: ClusterConfig) -> list[Finding]:
    code, _, err = _query("sbatch", "--test-only", "--job-name=ito-preflight", *sbatch_test_args(cfg), "--wrap=true")
    if not code:
        return []
    lowered = err.lower()
    keys = next(keys for word, keys in REFUSALS if word in lowered)
    return [failed(CHECK, f"config {keys}: sbatch --test-only refused the training job ({err}); set what the "
                          f"partition offers (sinfo -p {cfg.partition or '<partition>'} -o '%D %c %m %G %l')")]
