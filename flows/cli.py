"""ito-sweep: run a sweep without a server, run one stage, or serve the flow as deployments.

  ito-sweep run experiment=demo                # the sweep flow (Prefect ephemeral mode)
  ito-sweep run -m ito.images=1,2,4 seed=0,1   # -m is accepted for Hydra users; lists always expand
  ito-sweep plan experiment=demo               # points, committed stages, sbatch script, GPU-hours; submits nothing
  ito-sweep prep|train|strip|eval [OVERRIDE...]  # one stage, for each grid point in turn (debugging)
  ito-sweep serve                              # serve deployments ito-sweep/local and ito-sweep/slurm
                                               # (needs PREFECT_API_URL, and PREFECT_API_AUTH_STRING for a
                                               # server with basic auth); then, from anywhere:
  prefect deployment run 'ito-sweep/slurm' --param overrides='["ito.images=1,2,4"]' --watch

Every command first runs the preflight (docs/REFERENCE.md "Preflight"): store, inputs, SLURM settings, shard count,
report patterns, Prefect server, in seconds; a failure prints one line naming the setting and the fix, and exits 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

# Offline-friendly Prefect defaults; a user's own settings win. The ephemeral server gets 90 s to start
# (Prefect's default 20 s is missed on a busy 2-core machine). A stage command runs outside any flow run: its log
# lines still print, only their copy for the Prefect API (no flow run to file them under) is dropped, not warned of.
PREFECT_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                    "PREFECT_LOGGING_EXTRA_LOGGERS": "ito_core,cluster",
                    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
                    "PYTHONWARNINGS": "ignore::FutureWarning"}

STAGES = ("prep", "train", "strip", "eval")


COMMON = argparse.ArgumentParser(add_help=False)
COMMON.add_argument("--config-name", default="config", help="configs/<name>.yaml to start from (default: config)")
COMMON.add_argument("-m", "--multirun", action="store_true", help="accepted for Hydra habits; lists always expand")
SKIP_CHECK = {"action": "append", "default": [], "metavar": "CHECK",
              "help": "skip a preflight check: storage, inputs, slurm, shards, metrics, prefect, or all (repeatable)"}
COMMON.add_argument("--skip-check", **SKIP_CHECK)
COMMON.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                    help="Hydra overrides (optional), e.g. experiment=demo ito.images=1,2 model=vit_b_16")
SWEEP_NAME = {"default": "", "help": "report folder sweeps/<name>/ (default: sweep-<hash of the grid>)"}
COMMANDS = {"run": "run the sweep flow: every grid point's prep -> train -> strip -> eval, then the report",
            "plan": "print what `run` would do and cost, submitting nothing",
            "serve": "serve deployments ito-sweep/local and ito-sweep/slurm on a Prefect server (PREFECT_API_URL; "
                     "PREFECT_API_AUTH_STRING=user:password for a server with basic auth)",
            "prep": "prep of each grid point", "train": "prep + train of each grid point",
            "strip": "strip of each trained grid point", "eval": "eval of each stripped grid point"}
STAGE_NOTE = " (debugging): lists expand as for `run`, and the points run one after another"


def _config_choices() -> str:
    """The experiments and config groups, read from configs/ (the help then lists what is really there)."""
    from ito_core.config import CONFIG_DIR

    groups = {d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(CONFIG_DIR.iterdir()) if d.is_dir()
              and any(d.glob("*.yaml"))}
    lines = [f"experiments (experiment=NAME): {', '.join(groups.pop('experiment', []))}",
             "config groups (GROUP=OPTION):"]
    lines += [f"  {name}: {', '.join(options)}" for name, options in groups.items()]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ito-sweep", description=__doc__, epilog=_config_choices(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub = {name: commands.add_parser(name, help=text, description=text + (STAGE_NOTE if name in STAGES else ""),
                                     parents=[] if name == "serve" else [COMMON])
           for name, text in COMMANDS.items()}
    sub["run"].add_argument("--sweep-name", **SWEEP_NAME)
    sub["run"].add_argument("--max-concurrent-train", type=int, help="training jobs at once (flow default: 4)")
    sub["plan"].add_argument("--sweep-name", **SWEEP_NAME)
    sub["plan"].add_argument("--mfu", type=float, help="assumed model FLOPs utilisation, 0-1 (default: plan.mfu)")
    sub["plan"].add_argument("--peak-tflops", type=float, default=0.0,
                             help="a device's peak TFLOP/s, e.g. 989 for an H100 in bf16 (default: train.peak_tflops "
                                  "or ITO_PEAK_TFLOPS)")
    sub["plan"].add_argument("--bench", help="price at the throughput a bench/train_step.py --json file measured "
                                             "(default: plan.bench)")
    sub["serve"].add_argument("--limit", type=int, default=None, help="flow runs at once (default: no limit)")
    sub["serve"].add_argument("--skip-check", **SKIP_CHECK)
    return parser


def _preflight(configs: list, command: str, skip: list[str]) -> list:
    """The preflight's findings; on a failure its lines (one per failed check) are printed and it raises."""
    from flows.preflight import PreflightFailed, preflight

    findings = preflight(configs, command, skip)
    if any(f.failed for f in findings):
        raise PreflightFailed(findings)
    for finding in findings:
        print(finding.line(), file=sys.stderr)
    return findings


def _run_stage(stage: str, overrides: list[str], config_name: str, skip: list[str]) -> None:
    from flows.stage_command import run_stage_command

    for line in run_stage_command(stage, overrides, config_name=config_name,
                                  preflight=lambda configs: _preflight(configs, stage, skip)):
        print(line, flush=True)


def _plan(args: argparse.Namespace) -> int:
    """The plan, with the preflight's findings in it; exit 2 when a check failed (as `run` would refuse)."""
    from flows.plan import checked_plan
    from flows.preflight import PreflightFailed

    plan, findings = checked_plan(args.overrides, config_name=args.config_name, sweep_name=args.sweep_name,
                                  mfu=args.mfu, peak_tflops=args.peak_tflops, bench=args.bench,
                                  skip_checks=args.skip_check)
    print(plan)
    if any(f.failed for f in findings):
        raise PreflightFailed(findings)
    return 0


def _run(args: argparse.Namespace) -> int:
    from flows.grid import validated_grid
    from flows.sweep import SweepFailed, ito_sweep
    from ito_core.config import config_warnings

    limit = {} if args.max_concurrent_train is None else {"max_concurrent_train": args.max_concurrent_train}
    # Checked here first as well: inside the flow run a config error would come wrapped in Prefect's traceback.
    _, configs = validated_grid(args.overrides, config_name=args.config_name, sweep_name=args.sweep_name, **limit)
    for warning in dict.fromkeys(w for cfg in configs for w in config_warnings(cfg)):
        print(f"ito-sweep: warning: {warning}", file=sys.stderr)
    _preflight(configs, "run", args.skip_check)  # before Prefect's server starts: a failure ends in seconds
    try:
        print(ito_sweep(overrides=args.overrides, config_name=args.config_name, sweep_name=args.sweep_name,
                        skip_checks=["all"], **limit))  # checked just now
    except SweepFailed as err:
        print(f"ito-sweep: {err}", file=sys.stderr)  # the report: failed points, their errors, how to resume
        return 1
    return 0


def _serve(limit: int | None, skip: list[str]) -> None:
    """Register the deployments and run their flow runs (each in a subprocess) until interrupted."""
    from prefect import serve
    from prefect.types.entrypoint import EntrypointType

    from flows.sweep import DEPLOYMENTS, ito_sweep

    _preflight([], "serve", skip)  # the server answers and accepts PREFECT_API_AUTH_STRING

    serve(*(ito_sweep.to_deployment(name=name, parameters=preset, entrypoint_type=EntrypointType.MODULE_PATH,
                                    description=f"ito-sweep with {preset}; pass overrides=[...] to set the grid")
            for name, preset in DEPLOYMENTS.items()), limit=limit)


def main(argv: list[str] | None = None) -> int:
    for name, value in PREFECT_DEFAULTS.items():  # before prefect is imported (lazily, below)
        os.environ.setdefault(name, value)
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command is None:  # no command: what there is to do, not an error about a missing argument
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Prefect API request otherwise
    from flows.preflight import PreflightFailed
    from ito_core.storage import StorageError

    try:
        if args.command == "run":
            return _run(args)
        if args.command == "plan":
            return _plan(args)
        if args.command == "serve":
            _serve(args.limit, args.skip_check)
        else:
            _run_stage(args.command, args.overrides, args.config_name, args.skip_check)
    except PreflightFailed as err:  # one line per failed check, each naming the setting and the fix
        for finding in err.findings:
            if finding.failed:
                print(f"ito-sweep: {finding.line()}", file=sys.stderr)
        return 2
    except (ValueError, StorageError) as err:  # config errors, an unusable store: one clear line, no traceback
        print(f"ito-sweep: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
