"""``ito-sweep plan``: every point with its run key, committed and pending stages, cost and (SLURM) sbatch script;
the same refusals as ``run``; nothing written, nothing submitted."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from flows import cli
from flows.cost import assumed_throughput, measured_throughput, point_cost, read_bench
from flows.grid import normalized, validated_grid
from flows.plan import plan_sweep
from ito_core.artifacts import run_key
from ito_core.config import load_config
from ito_core.flops import train_flops_per_sample
from ito_core.storage import LocalStore, commit


@pytest.fixture(autouse=True)
def _own_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main sets Prefect defaults in os.environ; keep them out of the rest of the session's tests."""
    for name in (*cli.PREFECT_DEFAULTS, "ITO_PEAK_TFLOPS"):
        monkeypatch.setenv(name, os.environ.get(name, ""))
        monkeypatch.delenv(name)


def _where(tmp_path: Path) -> list[str]:
    return [f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}"]


def _rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if re.match(r"\| \d+ \|", line)]


def test_demo_plan_lists_every_point_with_stages_and_committed_ones_skipped(tmp_path: Path) -> None:
    overrides = ["experiment=demo", *_where(tmp_path)]
    points, configs = validated_grid(overrides, config_name="config")
    done = configs[2]  # ito.images=2 ito.fusion=none: trained and stripped, not evaluated
    store = LocalStore(tmp_path / "store")
    for stage in ("train", "model"):
        commit(store, f"{run_key(done)}/{stage}", {"stage": stage})
    rows = _rows(plan_sweep(overrides, mfu=0.5, peak_tflops=100.0))
    assert [row[1] for row in rows] == ["ito.images=1 ito.fusion=none", "ito.images=1 ito.fusion=transformer",
                                        "ito.images=2 ito.fusion=none", "ito.images=2 ito.fusion=transformer"]
    assert [row[2].strip("`") for row in rows] == [run_key(cfg) for cfg in configs]
    assert [row[3:7] for row in rows] == [["run"] * 4, ["run"] * 4, ["run", "done", "done", "run"], ["run"] * 4]
    # nothing created beside the two manifests written above: no job folder, no report, no shards
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        f"store/{run_key(done)}/{stage}/manifest.json" for stage in ("train", "model"))


def test_cost_is_flops_times_samples_over_the_sustained_rate(tmp_path: Path) -> None:
    cfg = load_config(["model=vit_b_16", "train.steps=1000", "train.batch_size=256", "cluster.tasks_per_node=4",
                       "train.peak_tflops=500"])
    rate = assumed_throughput(cfg, mfu=0.25)
    assert rate is not None and rate.flops_per_s == 0.25 * 500e12 and "25 % MFU of 500 TFLOP/s" in rate.source
    cost = point_cost(cfg, rate)
    per_sample = train_flops_per_sample(cfg.model, cfg.ito)
    assert cost.samples == 256_000 and cost.total_flops == per_sample * 256_000
    assert cost.device_hours == pytest.approx(per_sample * 256_000 / 125e12 / 3600)
    assert cost.wall_hours == pytest.approx(cost.device_hours / 4)
    assert assumed_throughput(cfg, mfu=0.25, peak_tflops=1000).flops_per_s == 250e12  # the flag beats the config
    assert assumed_throughput(load_config([]), mfu=0.4) is None  # no peak anywhere: hours unknown, not made up
    with pytest.raises(ValueError, match="plan.mfu=1.5"):
        assumed_throughput(cfg, mfu=1.5)


def test_grid_gpu_hours_are_the_sum_of_the_points(tmp_path: Path) -> None:
    overrides = ["experiment=demo", *_where(tmp_path)]
    text = plan_sweep(overrides, mfu=0.5, peak_tflops=2.0)
    hours = [float(row[8]) for row in _rows(text)]
    _, configs = validated_grid(overrides, config_name="config")
    expected = [train_flops_per_sample(c.model, c.ito) * c.train.steps * c.train.batch_size / 1e12 / 3600
                for c in configs]
    assert hours == pytest.approx(expected, rel=2e-3)  # printed to 3 significant digits
    total = float(re.search(r"GPU-hours: ([\d.e+-]+) for the grid", text).group(1))
    assert total == pytest.approx(sum(expected), rel=2e-3)


def _bench(tmp_path: Path, model_config: str = "tiny") -> Path:
    """The fields of a ``bench/train_step.py --json`` result that the plan reads."""
    models = {"CLIP baseline": {"train_gflop_per_sample": 0.01, "samples_per_s_median": 100.0},
              "ITO M=2 fusion": {"train_gflop_per_sample": 0.05, "samples_per_s_median": 30.0},
              "ITO M=2 no fusion": {"train_gflop_per_sample": 0.02, "samples_per_s_median": 60.0},
              "OpenCLIP CLIP (peer)": {"train_gflop_per_sample": 0.011, "samples_per_s_median": 80.0}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"models": models, "model_config": model_config, "device": "cpu",
                                "device_name": "cpu", "precision": "fp32", "batch_size": 64}))
    return path


def test_a_bench_json_prices_each_point_at_its_variants_measured_rate(tmp_path: Path) -> None:
    bench = read_bench(_bench(tmp_path))
    model = load_config([]).model
    fused = measured_throughput(load_config(["ito.images=2"]), bench, model)
    assert fused.flops_per_s == pytest.approx(0.05e9 * 30) and "ITO M=2 fusion" in fused.source
    plain = measured_throughput(load_config(["ito=clip"]), bench, model)
    assert plain.flops_per_s == pytest.approx(0.01e9 * 100) and "CLIP baseline" in plain.source
    text = plan_sweep(["experiment=demo", *_where(tmp_path)], bench=str(_bench(tmp_path)))
    assert "GPU-hours:" in text and "measured: ITO M=2 fusion" in text
    with pytest.raises(ValueError, match="the bench timed model=vit_b_16"):
        plan_sweep(["experiment=demo", *_where(tmp_path)], bench=str(_bench(tmp_path, "vit_b_16")))
    (tmp_path / "bad.json").write_text('{"models": {}}')
    with pytest.raises(ValueError, match="plan.bench=.*bench/train_step.py --json"):
        plan_sweep(["experiment=demo"], bench=str(tmp_path / "bad.json"))


def test_a_slurm_point_shows_the_sbatch_script_it_would_submit(tmp_path: Path) -> None:
    text = plan_sweep(["cluster=slurm", "cluster.tasks_per_node=2", "cluster.partition=gpu", *_where(tmp_path)])
    if shutil.which("srun"):
        assert "#SBATCH --ntasks-per-node=2" in text and "#SBATCH --partition=gpu" in text
        assert f"{tmp_path / 'work'}/runs/" in text and "--kill-on-bad-exit=1" in text
    else:
        assert "no SLURM client on this host" in text
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("bad", [["experiment=demo", "ito.imagez=2"], ["experiment=demo", "ito.images=1,0"]])
def test_plan_refuses_a_bad_grid_exactly_like_run(bad: list[str], capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flows.sweep.ito_sweep", lambda **kw: pytest.fail("the flow ran"))
    assert cli.main(["run", *bad]) == 2
    run_err = capsys.readouterr().err
    assert cli.main(["plan", *bad]) == 2
    assert capsys.readouterr().err == run_err and run_err.startswith("ito-sweep: config")


def test_cc12m_plans_with_a_shell_brace_pattern_and_prints_gpu_hours(capsys: pytest.CaptureFixture[str]) -> None:
    # priced from a machine without the data or a SLURM cluster: those checks are skipped, the rest still run
    assert cli.main(["plan", "experiment=ito_cc12m", "data.input=/data/cc12m/{00000..01242}.tar",
                     "--skip-check", "inputs", "--skip-check", "slurm"]) == 0
    out = capsys.readouterr().out
    assert "- preflight inputs: skipped: on request (--skip-check inputs, or the flow's skip_checks)" in out
    assert re.search(r"\*\*GPU-hours: [\d.,]+ for the grid", out) and "40 % MFU of 989 TFLOP/s" in out


def test_users_overrides_become_hydra_syntax() -> None:
    assert normalized(["data.input=/d/{0..9}.tar", "a=1"]) == ["data.input='/d/{0..9}.tar'", "a=1"]
    assert normalized(["x={a:1}"]) == ["x={a:1}"]  # a Hydra dict stays one
    assert normalized(["storage.root=s3://b/p"]) == ["storage=s3", "storage.root=s3://b/p"]
    assert normalized(["storage=local", "storage.root=s3://b/p"])[0] == "storage=local"
    with pytest.raises(ValueError, match="storage.root.*add storage=s3"):
        load_config(["storage.root=s3://b/p"])


def test_a_run_that_is_all_warm_up_is_warned_of(tmp_path: Path) -> None:
    text = plan_sweep(["train.steps=50", "train.warmup_steps=50", *_where(tmp_path)])
    assert "Warning: config train.warmup_steps=50 equals train.steps: the whole run is linear warm-up" in text
    assert "Warning" not in plan_sweep(["train.steps=50", "train.warmup_steps=49", *_where(tmp_path)])
