"""ClusterConfig -> submitit executors: the sbatch script submitit would write (rendered, not submitted),
time-out/requeue settings, and config errors that name the key."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import submitit

from cluster.executors import build_executor
from cluster.executors.slurm import render_sbatch, signal_delay_s
from ito_core.config import ClusterConfig


@pytest.fixture(autouse=True)
def srun_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit refuses a SlurmExecutor without ``srun`` on PATH; rendering needs no cluster."""
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))


@pytest.fixture(params=["a_0", "a 0", 'a"=0"', "a'; echo foo", r"a\=0", "a%j", "a\n0"])
def weird_tmp_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Paths with spaces, quotes, shell syntax, backslashes, '%' and newlines (as submitit's own tests)."""
    return tmp_path / request.param


def _script(cfg: ClusterConfig, folder: Path) -> tuple[str, dict[str, str]]:
    executor = build_executor(cfg, folder)
    assert isinstance(executor, submitit.SlurmExecutor)
    text = render_sbatch(executor)
    options = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            options[key] = value
    return text, options


def test_defaults_map_to_sbatch_lines(tmp_path: Path) -> None:
    cfg = ClusterConfig(kind="slurm", tasks_per_node=2, timeout_min=60, max_requeues=5)
    text, options = _script(cfg, tmp_path)
    assert options == {
        "job-name": "ito-train", "nodes": "1", "ntasks-per-node": "2", "cpus-per-task": "1", "time": "60",
        "signal": "USR2@90", "open-mode": "append", "wckey": "submitit",
        "output": f"{tmp_path}/%j_0_log.out", "error": f"{tmp_path}/%j_0_log.err"}
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert "--kill-on-bad-exit=1" in srun, "a crashed rank ends the step instead of leaving the others hanging"
    assert srun.endswith(f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {tmp_path}")
    assert build_executor(cfg, tmp_path).max_num_timeout == 5  # cluster.max_requeues


def test_every_cluster_key_reaches_sbatch(tmp_path: Path) -> None:
    cfg = ClusterConfig(kind="slurm", nodes=2, tasks_per_node=4, gpus_per_node=4, cpus_per_task=8, mem_gb=64,
                        timeout_min=240, partition="gpu", account="proj-1", qos="high", constraint="a100&ib",
                        extra_sbatch={"mail_type": "END", "exclusive": True, "comment": "ito sweep 'a'"})
    _, options = _script(cfg, tmp_path)
    expected = {"nodes": "2", "ntasks-per-node": "4", "gpus-per-node": "4", "cpus-per-task": "8", "mem": "64GB",
                "time": "240", "partition": "gpu", "account": "proj-1", "qos": "high", "constraint": "'a100&ib'",
                "mail-type": "END", "exclusive": "", "comment": shlex.quote("ito sweep 'a'")}
    assert {k: options[k] for k in expected} == expected


@pytest.mark.parametrize(("timeout_min", "delay"), [(1, 15), (4, 60), (6, 90), (60, 90), (2880, 90)])
def test_usr2_arrives_before_the_time_limit(tmp_path: Path, timeout_min: int, delay: int) -> None:
    _, options = _script(ClusterConfig(kind="slurm", timeout_min=timeout_min), tmp_path)
    assert options["signal"] == f"USR2@{delay}" and signal_delay_s(timeout_min) == delay < timeout_min * 60


def test_weird_job_folders_are_quoted_or_refused(weird_tmp_path: Path) -> None:
    cfg = ClusterConfig(kind="slurm")
    if any(c in weird_tmp_path.name for c in "\n\\%"):
        with pytest.raises(ValueError, match="config cluster.work_dir: job folder"):
            build_executor(cfg, weird_tmp_path)
        return
    text, options = _script(cfg, weird_tmp_path)
    assert shlex.split(options["output"]) == [f"{weird_tmp_path}/%j_0_log.out"]
    assert shlex.split(options["error"]) == [f"{weird_tmp_path}/%j_0_log.err"]
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[-1] == str(weird_tmp_path)
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)  # the script parses as a whole


@pytest.mark.parametrize(("changes", "key"), [
    ({"kind": "pbs"}, "cluster.kind"),
    ({"nodes": 0}, "cluster.nodes"),
    ({"tasks_per_node": 0}, "cluster.tasks_per_node"),
    ({"timeout_min": 0}, "cluster.timeout_min"),
    ({"mem_gb": -1}, "cluster.mem_gb"),
    ({"max_requeues": -1}, "cluster.max_requeues"),
    ({"gpus_per_node": 8}, "cluster.tasks_per_node"),  # one process per GPU
    ({"kind": "local", "nodes": 2}, "cluster.nodes"),
    ({"kind": "debug", "tasks_per_node": 2}, "cluster.tasks_per_node"),
    ({"partition": "gpu\n#SBATCH --qos=top"}, "cluster.partition"),
    ({"extra_sbatch": {"time": 10}}, "cluster.extra_sbatch.time"),
    ({"extra_sbatch": {"ntasks_per_node": 3}}, "cluster.extra_sbatch.ntasks_per_node"),
    ({"extra_sbatch": {"--mail-type": "END"}}, "cluster.extra_sbatch.--mail-type"),
    ({"extra_sbatch": {"comment": "a\nb"}}, "cluster.extra_sbatch.comment"),
    ({"extra_sbatch": {"comment": ["a"]}}, "cluster.extra_sbatch.comment"),
])
def test_bad_values_name_the_config_key(tmp_path: Path, changes: dict, key: str) -> None:
    cfg = ClusterConfig(**{"kind": "slurm", **changes})
    with pytest.raises(ValueError, match=f"^config {key}: "):
        build_executor(cfg, tmp_path)


def test_slurm_without_a_slurm_client_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: -1))
    with pytest.raises(ValueError, match="config cluster.kind: 'slurm' but no SLURM client"):
        build_executor(ClusterConfig(kind="slurm"), tmp_path)


def test_local_and_debug_executors(tmp_path: Path) -> None:
    local = build_executor(ClusterConfig(kind="local", tasks_per_node=2, timeout_min=30, max_requeues=1), tmp_path)
    assert isinstance(local, submitit.LocalExecutor)
    assert local.parameters["tasks_per_node"] == 2 and local.parameters["timeout_min"] == 30
    assert local.max_num_timeout == 1
    assert isinstance(build_executor(ClusterConfig(kind="debug"), tmp_path), submitit.DebugExecutor)
