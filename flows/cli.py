"""ito-sweep: run a sweep without a server, run one stage, or serve the flow as deployments.

  ito-sweep run experiment=demo                # the sweep flow (Prefect ephemeral mode)
  ito-sweep run -m ito.images=1,2,4 seed=0,1   # -m is accepted for Hydra users; lists always expand
  ito-sweep plan experiment=demo               # points, committed stages, sbatch script, GPU-hours; submits nothing
  ito-sweep prep|train|strip|eval [OVERRIDE...]  # one stage, for each grid point in turn (debugging)
  ito-sweep serve                              # serve deployments ito-sweep/local and ito-sweep/slurm
                                               # (needs PREFECT_API_URL); then, from anywhere:
  prefect deployment run 'ito-sweep/slurm' --param overrides='["ito.images=1,2,4"]' --watch
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
COMMON.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                    help="Hydra overrides (optional), e.g. experiment=demo ito.images=1,2 model=vit_b_16")
SWEEP_NAME = {"default": "", "help": "report folder sweeps/<name>/ (default: sweep-<hash of the grid>)"}
COMMANDS = {"run": "run the sweep flow: every grid point's prep -> train -> strip -> eval, then the report",
            "plan": "print what `run` would do and cost, submitting nothing",
            "serve": "serve deployments ito-sweep/local and ito-sweep/slurm on a Prefect server (PREFECT_API_URL)",
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
    return parser


def _run_stage(stage: str, overrides: list[str], config_name: str) -> None:
    from flows.stage_command import run_stage_command

    for line in run_stage_command(stage, overrides, config_name=config_name):
        print(line, flush=True)


def _plan(args: argparse.Namespace) -> None:
    from flows.plan import plan_sweep

    print(plan_sweep(args.overrides, config_name=args.config_name, sweep_name=args.sweep_name, mfu=args.mfu,
                     peak_tflops=args.peak_tflops, bench=args.bench))


def _run(args: argparse.Namespace) -> int:
    from flows.grid import validated_grid
    from flows.sweep import SweepFailed, ito_sweep
    from ito_core.config import config_warnings

    limit = {} if args.max_concurrent_train is None else {"max_concurrent_train": args.max_concurrent_train}
    # Checked here first as well: inside the flow run a config error would come wrapped in Prefect's traceback.
    _, configs = validated_grid(args.overrides, config_name=args.config_name, sweep_name=args.sweep_name, **limit)
    for warning in dict.fromkeys(w for cfg in configs for w in config_warnings(cfg)):
        print(f"ito-sweep: warning: {warning}", file=sys.stderr)
    try:
        print(ito_sweep(overrides=args.overrides, config_name=args.config_name, sweep_name=args.sweep_name, **limit))
    except SweepFailed as err:
        print(f"ito-sweep: {err}", file=sys.stderr)  # the report: failed points, their errors, how to resume
        return 1
    return 0


def _serve(limit: int | None) -> None:
    """Register the deployments and run their flow runs (each in a subprocess) until interrupted."""
    from prefect import serve
    from prefect.types.entrypoint import EntrypointType

    from flows.sweep import DEPLOYMENTS, ito_sweep

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
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "plan":
            _plan(args)
        elif args.command == "serve":
            _serve(args.limit)
        else:
            _run_stage(args.command, args.overrides, args.config_name)
    except ValueError as err:  # config errors: one clear line, no traceback
        print(f"ito-sweep: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
