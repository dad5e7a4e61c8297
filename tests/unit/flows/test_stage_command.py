"""``ito-sweep prep|train|strip|eval`` as a user types them: lists expand (with or without ``-m``) into the points
``ito-sweep run`` would run, and a stage whose input was never committed is refused in one line naming the command
to run first, before any work (no prep, no staging folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows import cli
from ito_core.artifacts import RunLayout, run_key
from ito_core.config import load_config
from ito_core.storage import LocalStore, commit

pytestmark = pytest.mark.usefixtures("cli_env")  # conftest.py


@pytest.fixture
def where(tmp_path: Path) -> list[str]:
    return [f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}"]


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    errors = [line for line in out.err.splitlines() if not line.startswith("preflight ")]  # the checks that passed
    assert not out.out and len(errors) == 1 and "Traceback" not in out.err
    return errors[0]


def _commit_stage(where: list[str], overrides: list[str], layout_key: str) -> str:
    key = run_key(load_config([*where, *overrides]))
    commit(LocalStore(Path(where[0].partition("=")[2])), getattr(RunLayout(key), layout_key), {"checkpoint": "s"})
    return key


def test_strip_of_a_point_never_trained_names_train_and_leaves_no_staging(
        where: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(["strip", *where, "ito.images=2"], capsys)
    key = run_key(load_config([*where, "ito.images=2"]))
    assert f"strip: {key} was never trained" in err
    assert f"run `ito-sweep train {where[0]} {where[1]} ito.images=2` first" in err
    assert not (tmp_path / "work").exists(), "no staging folder"


def test_eval_of_a_point_never_stripped_names_strip_and_preps_nothing(
        where: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = _commit_stage(where, [], "train")
    err = _one_line_error(["eval", "--config-name", "config", *where], capsys)
    assert f"eval: {key} was never stripped" in err and "run `ito-sweep strip storage.root=" in err
    assert not (tmp_path / "store" / "data").exists() and not (tmp_path / "work").exists()


def test_eval_of_a_point_never_trained_names_train_then_strip(
        where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    err = _one_line_error(["eval", *where, "seed=3"], capsys)
    assert "was never trained" in err and "`ito-sweep train " in err and " && ito-sweep strip " in err


@pytest.mark.parametrize("multirun", [["-m"], []])
def test_a_list_runs_the_stage_for_each_point(multirun: list[str], where: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    keys = [_commit_stage(where, [f"seed={seed}"], "model") for seed in (0, 1)]  # committed: strip skips both
    assert cli.main(["strip", *multirun, *where, "seed=0,1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"strip done for {keys[0]} (seed=0): {{'checkpoint': 's'}}",
                     f"strip done for {keys[1]} (seed=1): {{'checkpoint': 's'}}"]


def test_only_the_points_never_trained_are_named(where: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    _commit_stage(where, ["seed=0"], "train")
    missing = run_key(load_config([*where, "seed=1"]))
    err = _one_line_error(["strip", "-m", *where, "seed=0,1"], capsys)
    assert f"strip: {missing} was never trained" in err and "(1 of 2 grid points)" in err


def test_each_stage_command_says_in_its_help_that_lists_expand(capsys: pytest.CaptureFixture[str]) -> None:
    for stage in cli.STAGES:
        with pytest.raises(SystemExit):
            cli.main([stage, "--help"])
        assert "lists expand as for `run`" in " ".join(capsys.readouterr().out.split())
