"""Run every benchmark in bench/, one after the other, print their tables and merge their JSON into one file.

A benchmark is a ``bench/*.py`` script with an argparse ``--json PATH`` option that prints markdown tables;
it may define ``QUICK_ARGS = [...]`` (a literal list) for ``--quick``, small sizes that finish in minutes.
Scripts are found, not listed, so a new one joins by following the convention.

    python bench/all.py --quick --json bench-quick.json
    python bench/all.py --only train_step,zero_stages --open-clip-python /tmp/ocvenv/bin/python --json bench.json
    python bench/all.py --set "train_step=--model-config vit_s_32 --batch-size 8"   # extra arguments for one script

Scripts run one at a time (on a small machine they would slow each other down). A failing script is recorded with
its exit code and output tail, and the rest still run; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import machine

BENCH_DIR = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"all", "common", "__init__", "__main__"}


def discover(folder: Path = BENCH_DIR) -> dict[str, Path]:
    """name -> script for every ``*.py`` in ``folder`` that takes ``--json`` (helpers and this runner left out)."""
    return {path.stem: path for path in sorted(folder.glob("*.py"))
            if path.stem not in NOT_BENCHMARKS and '"--json"' in path.read_text()}


def quick_args(script: Path) -> list[str]:
    """The script's ``QUICK_ARGS`` list, read without importing it (imports are heavy); [] if it has none."""
    for node in ast.parse(script.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "QUICK_ARGS" for t in node.targets):
            return [str(arg) for arg in ast.literal_eval(node.value)]
    return []


def command(script: Path, *, quick: bool, extra: list[str], open_clip_python: str | None, json_path: Path) -> list[str]:
    args = quick_args(script) if quick else []
    if open_clip_python and '"--open-clip-python"' in script.read_text():
        args += ["--open-clip-python", open_clip_python]
    return [sys.executable, str(script), *args, *extra, "--json", str(json_path)]


def run_one(argv: list[str], json_path: Path) -> dict[str, Any]:
    """Run a benchmark, streaming its output minus JSON lines (they go to the merged file); its record."""
    start, tail = time.perf_counter(), []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            tail = [*tail[-40:], line]
            if not line.startswith("{"):
                print(line, end="", flush=True)
    record: dict[str, Any] = {"command": shlex.join(argv), "returncode": proc.returncode,
                              "wall_s": time.perf_counter() - start}
    if proc.returncode == 0 and json_path.exists():
        record["result"] = json.loads(json_path.read_text())
    else:
        record["output_tail"] = "".join(tail)
    return record


def run_all(scripts: dict[str, Path], *, quick: bool, extra: dict[str, list[str]],
            open_clip_python: str | None = None) -> dict[str, Any]:
    merged: dict[str, Any] = {"machine": machine(), "quick": quick, "benchmarks": {}}
    with tempfile.TemporaryDirectory(prefix="bench-all-") as tmp:
        for name, script in scripts.items():
            print(f"\n## {name}\n", flush=True)
            json_path = Path(tmp) / f"{name}.json"
            argv = command(script, quick=quick, extra=extra.get(name, []), open_clip_python=open_clip_python,
                           json_path=json_path)
            merged["benchmarks"][name] = run_one(argv, json_path)
    return merged


def print_summary(merged: dict[str, Any]) -> None:
    print("\n## Summary\n\n| benchmark | exit code | wall s | command |\n|---|---:|---:|---|")
    for name, record in merged["benchmarks"].items():
        print(f"| {name} | {record['returncode']} | {record['wall_s']:.0f} | `{record['command']}` |")


def parse_sets(sets: list[str]) -> dict[str, list[str]]:
    """``["name=--a 1 --b"]`` -> ``{"name": ["--a", "1", "--b"]}``."""
    extra = {}
    for item in sets:
        name, sep, args = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: use --set NAME='ARGS'")
        extra.setdefault(name, []).extend(shlex.split(args))
    return extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each script's QUICK_ARGS (small sizes)")
    parser.add_argument("--only", help="comma-separated script names (default: all found)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=ARGS", help="extra arguments for NAME")
    parser.add_argument("--open-clip-python", help="passed to the scripts that take it (the OpenCLIP peer)")
    parser.add_argument("--json", type=Path, help="write the merged results here")
    args = parser.parse_args()
    scripts = discover()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(scripts))
        if unknown:
            raise SystemExit(f"--only: no benchmark {unknown}; found {sorted(scripts)}")
        scripts = {name: scripts[name] for name in wanted}
    merged = run_all(scripts, quick=args.quick, extra=parse_sets(args.set), open_clip_python=args.open_clip_python)
    print_summary(merged)
    if args.json:
        args.json.write_text(json.dumps(merged) + "\n")
    return int(any(record["returncode"] for record in merged["benchmarks"].values()))


if __name__ == "__main__":
    sys.exit(main())
