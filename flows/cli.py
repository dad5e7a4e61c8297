"""``ito-sweep``: run a sweep without a server, run one stage, or serve the flow as deployments.

  ito-sweep run experiment=demo                # the sweep flow (Prefect ephemeral mode)
  ito-sweep run -m ito.images=1,2,4 seed=0,1   # -m is accepted for Hydra users; lists always expand
  ito-sweep prep|train|strip|eval [OVERRIDES]  # one stage of one grid point, for debugging
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


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ito-sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("run", "serve", *STAGES))
    parser.add_argument("-m", "--multirun", action="store_true", help="accepted for Hydra habits; no effect")
    parser.add_argument("--config-name", default="config")
    parser.add_argument("--sweep-name", default="")
    parser.add_argument("--max-concurrent-train", type=int, help="run: training jobs at once (flow default: 4)")
    parser.add_argument("--limit", type=int, default=None, help="serve: flow runs at once (default: no limit)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. ito.images=1,2 model=vit_b_16")
    return parser.parse_args(argv)


def _run_stage(stage: str, overrides: list[str], config_name: str) -> None:
    from flows.stages import eval_task, prep_task, strip_task, train_task
    from ito_core.artifacts import run_key
    from ito_core.config import load_config

    cfg = load_config(overrides, config_name=config_name)
    key = run_key(cfg)
    data_keys = prep_task.fn(cfg) if stage in ("prep", "train", "eval") else {}
    result = {"prep": lambda: data_keys, "train": lambda: train_task.fn(cfg, data_keys, key),
              "strip": lambda: strip_task.fn(cfg, key), "eval": lambda: eval_task.fn(cfg, data_keys, key)}[stage]()
    print(f"{stage} done for {key}: {result if stage != 'train' else result['checkpoint']}")


def _run(args: argparse.Namespace) -> int:
    from flows.sweep import SweepFailed, ito_sweep, validated_grid

    limit = {} if args.max_concurrent_train is None else {"max_concurrent_train": args.max_concurrent_train}
    # Checked here first as well: inside the flow run a config error would come wrapped in Prefect's traceback.
    validated_grid(args.overrides, config_name=args.config_name, sweep_name=args.sweep_name, **limit)
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
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per Prefect API request otherwise
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "serve":
            _serve(args.limit)
        else:
            _run_stage(args.command, args.overrides, args.config_name)
    except ValueError as err:  # config errors: one clear line, no traceback
        print(f"ito-sweep: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
