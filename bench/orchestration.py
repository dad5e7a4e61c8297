"""Orchestration overhead (issue 8): the time Prefect, submitit and SLURM add around the training.

Three parts, each a markdown table and a section of ``--json``:

- ``launch``: ``prefect deployment run ito-sweep/<local|slurm> --param ... --watch`` against a real Prefect
  server (started as ``tests/fixtures/prefect_server.py`` starts it) that ``ito-sweep serve`` serves, polling
  every second, until the first training step is logged. Split into phases by timestamps the pieces record
  anyway: the flow run's and task runs' states in Prefect, the job's ``*_submitted.pkl``, submitit's
  "Starting with JobEnvironment" line and ``ito_core.train``'s "engine ready" and "step 1/" lines. One point of
  the e2e test's tiny budget (ITO M=2, N=2, fusion, 3 steps). Runs: ``local, cold`` (its data prep included),
  ``local`` (prep cached: orchestration alone), ``slurm`` when a single-node SLURM cluster is up or this
  root process can start one (``cluster/slurm-up.sh``; stopped again afterwards).
- ``cached``: each of those deployment runs again with the same parameters: every stage finds its committed
  manifest and skips (goal: <= 1 s per stage); and a 100-point sweep whose points are all committed (the ``local``
  run's manifests copied under every point's run key): Prefect's own cost per grid point.
- ``grid``: a 100-point grid (ito.images 4 x train.lr 5 x seed 5) expanded (``flows.grid.expand_grid``),
  validated (``load_grid``), keyed (``run_key``, ``data_id``) and submitted as 100 training jobs through
  ``cluster.jobs.submit_training``, to SLURM with ``--hold`` (sbatch runs; the jobs never start and are
  cancelled), else to the debug executor (nothing is written or run). Goal: <= 10 s. ``load_config`` per
  point (what the flow did before ``load_grid``) is timed on ``--baseline-points`` points for comparison.

    python bench/orchestration.py --json orchestration.json
    python bench/orchestration.py --parts grid --profile     # + cProfile's top functions of the grid part
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the test fixtures start the Prefect server and SLURM

from common import describe, machine  # noqa: E402
from e2e.test_sweep_flow import SMALL_BUDGET  # noqa: E402
from fixtures.prefect_server import Background, PrefectServer, venv_script  # noqa: E402
from fixtures.slurm_cluster import CLUSTER_DIR, slurm_ready  # noqa: E402

QUICK_ARGS = ["--no-slurm", "--baseline-points", "3"]  # bench/all.py --quick
POINT = [*SMALL_BUDGET, "ito.images=2", "ito.fusion=transformer", "train.steps=3", "train.log_every=1",
         "train.checkpoint_every=3"]
GRID_AXES = ["ito.images=1,2,3,4", "train.lr=1e-4,2e-4,3e-4,5e-4,1e-3", "seed=range(5)"]
STAGES = ("prep", "train", "strip", "eval", "report")
GOAL_SKIP_S, GOAL_GRID_S = 1.0, 10.0
# The environment of the served flow runs and their jobs: CPU DeepSpeed, one thread a rank, no W&B.
JOB_ENV = {"PREFECT_RUNNER_POLL_FREQUENCY": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning"}


@contextlib.contextmanager
def slurm_cluster() -> Iterator[tuple[str | None, str]]:
    """(partition, "") of a running single-node cluster, started here if need be, else (None, why not)."""
    if partition := slurm_ready():  # someone's cluster: use it, leave it running
        yield partition, ""
        return
    if os.geteuid() != 0:
        yield None, "no SLURM cluster is up and this is not root, which cluster/slurm-up.sh needs"
        return
    env = {**os.environ, "SLURM_CPUS": str(max(2, os.cpu_count() or 1))}
    up = subprocess.run(["bash", str(CLUSTER_DIR / "slurm-up.sh")], capture_output=True, text=True, env=env,
                        timeout=600, check=False)
    try:
        partition = slurm_ready()
        yield partition, "" if partition else f"cluster/slurm-up.sh failed (exit {up.returncode}): {up.stderr[-500:]}"
    finally:
        subprocess.run(["bash", str(CLUSTER_DIR / "slurm-down.sh")], capture_output=True, timeout=120, check=False)


@contextlib.contextmanager
def served_prefect(work: Path) -> Iterator[PrefectServer]:
    """A Prefect server and ``ito-sweep serve`` serving its deployments."""
    (work / "prefect").mkdir()
    server = PrefectServer(home=work / "prefect")
    server.start()
    served = Background([venv_script("ito-sweep"), "serve"], server.env(**JOB_ENV), work / "serve.log", cwd=work)
    try:
        served.start(lambda: deployments_registered(server))
        yield server
    finally:
        served.stop()
        server.stop()


def deployments_registered(server: PrefectServer) -> bool:
    from prefect.exceptions import ObjectNotFound

    with server.client() as client:
        try:
            return all(client.read_deployment_by_name(f"ito-sweep/{name}") for name in ("local", "slurm"))
        except ObjectNotFound:
            return False


def log_time(path: Path, pattern: str) -> float:
    """Epoch time of the first line of ``path`` matching ``pattern`` (group 1: a logging asctime)."""
    found = re.search(pattern, path.read_text(errors="replace"), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no line matching {pattern!r} in {path}")
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def job_marks(jobs: Path, *, since: float) -> dict[str, float]:
    """When the job submitted to ``jobs`` after ``since`` was submitted, started, had its engine ready and logged
    step 1; {} when there is none (the training stage was skipped)."""
    submitted = [p for p in jobs.glob("*_submitted.pkl") if p.stat().st_mtime > since]
    if not submitted:
        return {}
    job = submitted[0].name.split("_")[0]
    return {"job submitted": submitted[0].stat().st_mtime,  # written just before sbatch / the local Popen
            "job process started": log_time(jobs / f"{job}_0_log.out", r"\((\S+ \S+)\) - Starting with JobEnv"),
            "engine ready": log_time(jobs / f"{job}_0_log.err", r"^(\S+ \S+) INFO ito_core.train: engine ready"),
            "first step logged": log_time(jobs / f"{job}_0_log.err", r"^(\S+ \S+) INFO ito_core.train: step 1/")}


def deployment_run(server: PrefectServer, deployment: str, overrides: list[str], *, sweep: str, work: Path,
                   max_concurrent_train: int = 1) -> dict[str, Any]:
    """Run ``deployment`` on ``overrides``: its phase timestamps (epoch s) and its stages' median task times."""
    params = {"overrides": [*overrides, f"cluster.work_dir={work / 'work'}"], "sweep_name": sweep,
              "storage_root": str(work / "store"), "max_concurrent_train": max_concurrent_train}
    start = time.time()
    code, output, run_id = server.run_deployment(deployment, params)
    returned = time.time()
    if code != 0:
        raise RuntimeError(f"{deployment} run failed:\n{output[-4000:]}\n(served flow runs log to "
                           f"{work / 'serve.log'}, jobs to {work / 'work'})")
    run, tasks, logs = read_flow_run(server, run_id)
    stages: dict[str, list[Any]] = {}
    for task in (t for t in tasks if t.start_time and t.end_time):  # "prep embedded", "train runs/<key>", "report-e25"
        stages.setdefault(re.match(r"[a-z]+", task.name).group(), []).append(task)
    validated = next(log.timestamp for log in logs if "grid points" in log.message)  # the flow's first log line
    marks = {"deployment run": start, "flow run created": run.created.timestamp(),
             "flow running": run.start_time.timestamp(), "grid expanded + validated": validated.timestamp(),
             "prep done": max(t.end_time for t in stages["prep"]).timestamp(),
             "train task started": min(t.start_time for t in stages["train"]).timestamp()}
    if len(stages["train"]) == 1:
        marks.update(job_marks(work / "work" / stages["train"][0].name.split(" ", 1)[1] / "jobs", since=start))
    marks.update({"flow completed": run.end_time.timestamp(), "CLI returned": returned})
    durations = {name: statistics.median((t.end_time - t.start_time).total_seconds() for t in runs)
                 for name, runs in stages.items()}
    return {"flow_run_id": str(run_id), "marks": marks, "stage_s": durations,
            "tasks": {name: len(runs) for name, runs in stages.items()},
            "tasks_without_times": sum(not (t.start_time and t.end_time) for t in tasks),
            "flow_s": marks["flow completed"] - marks["flow running"], "cli_s": returned - start}


def read_flow_run(server: PrefectServer, run_id: str, *, deadline_s: float = 60) -> tuple[Any, list[Any], list[Any]]:
    """The flow run, all its task runs and its logs (the API answers 200 at a time). Task run records are
    written from the flow's events, a little after the flow ends: wait until every one has its end time."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + deadline_s
    with server.client() as client:
        while True:
            run, tasks, logs = client.read_flow_run(run_id), [], []
            while page := client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])),
                                                offset=len(tasks), limit=200):
                tasks += page
            if all(t.start_time and t.end_time for t in tasks) or time.monotonic() > deadline:
                break
            time.sleep(1)
        while page := client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                                       offset=len(logs), limit=200):
            logs += page
    return run, tasks, logs


def commit_grid_copies(work: Path, *, source: list[str]) -> list[str]:
    """The 100-point grid's overrides, after committing every point: the train, model and eval manifests of the
    run of ``source`` (a point that ran) copied under each point's run key, so that a sweep skips them all."""
    from flows.grid import expand_grid
    from ito_core.artifacts import RunLayout, read_manifest, run_key
    from ito_core.config import load_grid
    from ito_core.storage import LocalStore, commit

    store = LocalStore(work / "store")
    done = RunLayout(run_key(load_grid(expand_grid(source))[0]))
    overrides = [*POINT, *GRID_AXES]
    for cfg in load_grid(expand_grid(overrides)):
        run = RunLayout(run_key(cfg))
        for ran, target in ((done.train, run.train), (done.model, run.model), (done.eval, run.eval)):
            if target != ran:  # the point that ran may be on the grid
                commit(store, target, read_manifest(store, ran))
    return overrides


def phases(marks: dict[str, float]) -> dict[str, float]:
    """Seconds between consecutive marks ("a -> b"), plus the headline total."""
    names = list(marks)
    out = {f"{a} -> {b}": marks[b] - marks[a] for a, b in zip(names, names[1:], strict=False)}
    if "first step logged" in marks:
        out["total: deployment run -> first step logged"] = marks["first step logged"] - marks["deployment run"]
    return out


def startup_cpu_s() -> dict[str, float]:
    """CPU seconds (user + sys) of the process start-ups on the way to a first step, each alone: on a busy machine
    their wall time is mostly waiting for a core, so these are what the phases above would cost on an idle one."""
    python = sys.executable
    commands = {"prefect CLI (`prefect --version`)": [venv_script("prefect"), "--version"],
                "flow-run process imports (`import flows.sweep`)": [python, "-c", "import flows.sweep"],
                "training job imports (`import deepspeed, ito_core.train`)": [
                    python, "-c", "import deepspeed, ito_core.train"]}
    costs = {}
    for name, argv in commands.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, cwd=ROOT, env={**os.environ, **JOB_ENV}, capture_output=True, check=True, timeout=300)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        costs[name] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return costs


def launch_and_cached(work: Path, *, partition: str | None) -> dict[str, Any]:
    """Deployment runs of new points (the first one also preps the data) and of the same points again."""
    runs: dict[str, Any] = {}
    with served_prefect(work) as server:
        plan = [("local, cold", "ito-sweep/local", 0), ("local", "ito-sweep/local", 1)]
        plan += [("slurm", "ito-sweep/slurm", 2)] if partition else []
        for name, deployment, seed in plan:
            print(f"deployment run: {name} ...", file=sys.stderr, flush=True)
            point = [*POINT, f"seed={seed}"]
            runs[name] = deployment_run(server, deployment, point, sweep=f"bench-{seed}", work=work)
            if name != "local, cold":
                print(f"deployment run: {name}, cached re-run ...", file=sys.stderr, flush=True)
                runs[f"{name}, cached re-run"] = deployment_run(server, deployment, point, sweep=f"bench-{seed}",
                                                                work=work)
        print("deployment run: 100-point grid, every point committed ...", file=sys.stderr, flush=True)
        grid_overrides = commit_grid_copies(work, source=[*POINT, "seed=1"])
        runs["100 points, cached re-run"] = deployment_run(server, "ito-sweep/local", grid_overrides,
                                                           sweep="bench-grid", work=work, max_concurrent_train=4)
    for run in runs.values():
        run["phases_s"] = phases(run["marks"])
    return runs


def timed(fn: Callable[[], Any], into: dict[str, dict[str, float]], name: str) -> Any:
    """Run ``fn``; record its wall time and this process's CPU time (less sensitive to a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    into["wall_s"][name], into["cpu_s"][name] = time.perf_counter() - wall, time.process_time() - cpu
    return out


def grid(work: Path, *, partition: str | None, baseline_points: int, profile: bool) -> dict[str, Any]:
    from cluster.jobs import submit_training
    from flows.grid import expand_grid
    from ito_core.artifacts import data_id, run_key
    from ito_core.config import load_config, load_grid

    executor = ["cluster=slurm", "+cluster.extra_sbatch.hold=true"] if partition else ["cluster=debug"]
    overrides = [*POINT, *executor, f"cluster.work_dir={work / 'grid'}", *GRID_AXES]
    profiler, t = cProfile.Profile(), {"wall_s": {}, "cpu_s": {}}
    with profiler if profile else contextlib.nullcontext():
        points = timed(lambda: expand_grid(overrides), t, "expand")
        configs = timed(lambda: load_grid(points), t, "validate")
        keys = timed(lambda: [(run_key(cfg), data_id(cfg)) for cfg in configs], t, "keys")
        jobs = timed(lambda: [submit_training(cfg, shard_paths=[], shard_samples=[], run_key=key)
                              for cfg, (key, _) in zip(configs, keys, strict=True)], t, "submit")
    if partition:
        subprocess.run(["scancel", *(job.job_id for job in jobs)], check=False, timeout=120)
    for kind in t.values():
        kind["total"] = sum(kind.values())
    timed(lambda: [load_config(point) for point in points[:baseline_points]], t, "baseline")
    per_point = {kind: t[kind].pop("baseline") / max(1, baseline_points) for kind in t}
    result = {"points": len(points), "executor": "slurm (sbatch --hold)" if partition else "debug (nothing runs)",
              **t, "load_config_per_point": per_point, "baseline_points": baseline_points}
    if profile:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        result["profile"] = text.getvalue()
    return result


def print_tables(result: dict[str, Any]) -> None:
    print(f"\n{describe(result['machine'])}")
    runs = {name: run for name, run in result.get("launch", {}).items() if "cached" not in name}
    if runs:
        print("\n### Deployment run -> first training step (s)\n")
        print(f"| phase | {' | '.join(runs)} |\n|---|{'---:|' * len(runs)}")
        keys = dict.fromkeys(key for run in runs.values() for key in run["phases_s"])
        for key in keys:
            cells = (f"{run['phases_s'][key]:.2f}" if key in run["phases_s"] else "" for run in runs.values())
            print(f"| {key} | {' | '.join(cells)} |")
    if "startup_cpu_s" in result:
        print("\n### Process start-ups on that path, CPU time alone (s)\n\n| start-up | CPU s |\n|---|---:|")
        for name, cpu in result["startup_cpu_s"].items():
            print(f"| {name} | {cpu:.2f} |")
    cached = {name: run for name, run in result.get("launch", {}).items() if "cached" in name}
    if cached:
        print(f"\n### Cached re-run: stage time, median task (s; goal <= {GOAL_SKIP_S:g} s per stage)\n")
        print(f"| stage | {' | '.join(cached)} |\n|---|{'---:|' * len(cached)}")
        for stage in STAGES:
            cells = (f"{run['stage_s'][stage]:.3f}" + (f" (x {run['tasks'][stage]})" if run["tasks"][stage] > 1 else "")
                     for run in cached.values())
            print(f"| {stage} | {' | '.join(cells)} |")
        rows = {"flow running -> grid expanded + validated": [run["phases_s"]["flow running -> grid expanded + "
                                                              "validated"] for run in cached.values()],
                "whole flow run (running -> completed)": [run["flow_s"] for run in cached.values()],
                "`prefect deployment run --watch` command": [run["cli_s"] for run in cached.values()]}
        for name, values in rows.items():
            print(f"| {name} | {' | '.join(f'{v:.2f}' for v in values)} |")
    if "grid" in result:
        g = result["grid"]
        print(f"\n### {g['points']}-point grid, {g['executor']} (goal <= {GOAL_GRID_S:g} s)\n")
        print("| step | wall s | CPU s (this process) |\n|---|---:|---:|")
        for key in g["wall_s"]:
            print(f"| {key} | {g['wall_s'][key]:.2f} | {g['cpu_s'][key]:.2f} |")
        before = {kind: g["load_config_per_point"][kind] * g["points"] for kind in ("wall_s", "cpu_s")}
        print(f"| before load_grid: validate = load_config per point x {g['points']} (timed on "
              f"{g['baseline_points']}) | {before['wall_s']:.2f} | {before['cpu_s']:.2f} |")
        if "profile" in g:
            print(f"\n```\n{g['profile']}```")
    for name, why in result.get("skipped", {}).items():
        print(f"\nskipped {name}: {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="launch,grid", help="comma-separated: launch (with cached), grid")
    parser.add_argument("--no-slurm", action="store_true", help="leave SLURM out (no cluster start)")
    parser.add_argument("--baseline-points", type=int, default=10, help="points timed with load_config each")
    parser.add_argument("--profile", action="store_true", help="cProfile the grid part")
    parser.add_argument("--work", type=Path, help="keep servers' logs, jobs and the store here (default: a temp dir)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    result: dict[str, Any] = {"machine": machine(), "skipped": {}}
    work = contextlib.nullcontext(str(args.work)) if args.work else tempfile.TemporaryDirectory(prefix="bench-orch-")
    with work as folder, (contextlib.nullcontext((None, "--no-slurm")) if args.no_slurm
                          else slurm_cluster()) as (partition, why):
        Path(folder).mkdir(parents=True, exist_ok=True)
        if partition is None:
            result["skipped"]["slurm"] = why
        if "launch" in parts:
            result["startup_cpu_s"] = startup_cpu_s()
            result["launch"] = launch_and_cached(Path(folder), partition=partition)
        if "grid" in parts:
            result["grid"] = grid(Path(folder), partition=partition, baseline_points=args.baseline_points,
                                  profile=args.profile)
    print_tables(result)
    if args.json:
        args.json.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
