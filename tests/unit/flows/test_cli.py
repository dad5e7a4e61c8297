"""The ``ito-sweep`` CLI as a user meets it: config errors are one line before any flow run starts, and stage
commands (``ito-sweep prep`` ...), which log outside any flow run, print their lines with no Prefect warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows import cli
from ito_core.storage import MANIFEST

ROOT = Path(__file__).resolve().parents[3]
# What a stage command does before its first Prefect task: the CLI's defaults, then Prefect's logging set-up
# (which attaches the API handler to ito_core's loggers).
PROBE = ("import os, logging, flows.cli; os.environ.update({k: v for k, v in flows.cli.PREFECT_DEFAULTS.items() "
         "if k not in os.environ}); from prefect.logging.configuration import setup_logging; setup_logging(); "
         "logging.getLogger('ito_core.probe').warning('probe line')")
PREFECT_WARNING = "without a flow run id"


def _stderr(**env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW"} | env
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=120, check=True).stderr


def test_ito_core_lines_outside_a_flow_run_print_without_a_prefect_warning() -> None:
    stderr = _stderr()
    assert "probe line" in stderr and PREFECT_WARNING not in stderr


def test_a_users_own_setting_wins() -> None:
    assert PREFECT_WARNING in _stderr(PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW="warn")


pytestmark = pytest.mark.usefixtures("cli_env")  # conftest.py


@pytest.mark.parametrize("bad", [["experiment=demo", "ito.imagez=2"], ["experiment=demo", "+ito.imagez=2"],
                                 ["experiment=demo", "ito.images=1,0"]])
def test_run_refuses_a_bad_grid_in_one_line_before_any_flow_run(
        bad: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    monkeypatch.setattr("flows.sweep.ito_sweep", lambda **kw: started.append(kw))
    assert cli.main(["run", *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ito-sweep: config") and "Traceback" not in err and len(err.splitlines()) == 1
    assert not started


def test_run_refuses_a_bad_sweep_name_before_any_flow_run(capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flows.sweep.ito_sweep", lambda **kw: pytest.fail("the flow ran"))
    assert cli.main(["run", "experiment=demo", "--sweep-name", "../up"]) == 2
    assert "sweep_name='../up'" in capsys.readouterr().err


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        cli.main(argv)
    return capsys.readouterr().out


def test_each_command_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    run, serve, plan = (_help([c, "--help"], capsys) for c in ("run", "serve", "plan"))
    assert "--max-concurrent-train" in run and "--limit" not in run and "OVERRIDE" in run
    assert "--limit" in serve and "OVERRIDE" not in serve and "--max-concurrent-train" not in serve
    assert "--mfu" in plan and "--bench" in plan and "--peak-tflops" in plan


def test_no_help_text_shows_raw_double_backticks(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in [["--help"], *([command, "--help"] for command in cli.COMMANDS)]:
        assert "``" not in _help(argv, capsys), argv


def test_no_command_prints_what_there_is_without_claiming_overrides_are_required(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    out = capsys.readouterr()
    text = out.out + out.err
    assert "required" not in text and "plan" in text and "serve" in text
    assert "experiments (experiment=NAME): demo, embedded_study, ito_ablation, ito_cc12m, ito_cc3m" in text
    assert "model: tiny, vit_b_16, vit_b_32, vit_l_14, vit_s_32" in text


def test_a_stage_command_runs_that_stage(tmp_path: Path) -> None:
    overrides = [f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}",
                 "data.max_train_samples=32", "data.shapes_train=32", "data.shapes_eval=16", "eval.max_samples=16"]
    assert cli.main(["prep", *overrides]) == 0
    committed = [p.name.split("-")[0] for p in (tmp_path / "store" / "data").iterdir() if (p / MANIFEST).exists()]
    assert "train" in committed and "eval" in committed
