"""bench/all.py: which scripts count as benchmarks, their --quick arguments, and the merged JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = '''
import argparse, json
from pathlib import Path
QUICK_ARGS = ["--size", "1"]
parser = argparse.ArgumentParser()
parser.add_argument("--size", type=int, default=100)
parser.add_argument("--json", type=Path)
args = parser.parse_args()
print("| size |\\n|---:|\\n| %d |" % args.size)
print(json.dumps({"noise": True}))  # a JSON line on stdout (train_step prints one) is kept out of the tables
args.json.write_text(json.dumps({"size": args.size}))
'''


@pytest.fixture
def bench_all(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("all.py")


def test_benchmarks_are_the_scripts_with_a_json_option(bench_all: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "speed.py").write_text(SCRIPT)
    (tmp_path / "plain.py").write_text(SCRIPT.replace('QUICK_ARGS = ["--size", "1"]\n', ""))
    (tmp_path / "helper.py").write_text("def f():\n    return 1\n")
    (tmp_path / "common.py").write_text(SCRIPT)  # the shared helper module, never a benchmark
    (tmp_path / "all.py").write_text(SCRIPT)

    found = bench_all.discover(tmp_path)

    assert list(found) == ["plain", "speed"]
    assert bench_all.quick_args(found["speed"]) == ["--size", "1"]
    assert bench_all.quick_args(found["plain"]) == []


def test_the_repository_benchmarks_are_found_with_quick_presets(bench_all: ModuleType) -> None:
    found = bench_all.discover()
    assert {"train_step", "inference", "orchestration", "zero_stages"} <= set(found)
    assert all(bench_all.quick_args(found[name]) for name in ("train_step", "inference", "orchestration",
                                                              "zero_stages"))


def test_run_all_merges_each_scripts_json_and_records_failures(bench_all: ModuleType, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "good.py").write_text(SCRIPT)
    (tmp_path / "bad.py").write_text('import sys\n"--json"\nprint("boom")\nsys.exit(3)\n')
    scripts = bench_all.discover(tmp_path)

    merged = bench_all.run_all(scripts, quick=True, extra={"good": ["--size", "7"]})

    good, bad = merged["benchmarks"]["good"], merged["benchmarks"]["bad"]
    assert merged["quick"] and merged["machine"]["cores"] >= 1
    assert good["returncode"] == 0 and good["result"] == {"size": 7}  # QUICK_ARGS, then --set's extras win
    assert good["command"].split()[2:6] == ["--size", "1", "--size", "7"]
    assert bad["returncode"] == 3 and "boom" in bad["output_tail"] and "result" not in bad
    out = capsys.readouterr().out
    assert "| 7 |" in out and '{"noise"' not in out
    json.dumps(merged)  # the merged file is JSON


def test_set_arguments_are_split_per_script(bench_all: ModuleType) -> None:
    assert bench_all.parse_sets(["a=--x 1", "b=--y 'two words'", "a=--z"]) == {
        "a": ["--x", "1", "--z"], "b": ["--y", "two words"]}
    with pytest.raises(SystemExit, match="NAME="):
        bench_all.parse_sets(["no-equals-sign"])
