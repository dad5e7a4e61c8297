"""bench/step_report.py: the train_step figures are arithmetic on the measured step times (fed made-up ones here,
so nothing depends on how busy the machine is), and the analytic FLOP counts of ours and the peer."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import ModuleType

import pytest

from ito_core.config import load_config
from ito_core.flops import train_flops_per_sample

BATCH, PEAK = 8, 2e11


@pytest.fixture
def report(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("step_report.py")


def measured(times: dict[str, list[float]]) -> dict:
    """What the workers would have reported besides their step times."""
    return {name: {"params": 1000 + i, "text_tokens": 16, "flops": 2.0e8, "peak_rss_mb": 900.0 + i,
                   "ready_rss_mb": 800.0, "first_loss": 2.07, "torch": "2.x", "peak_gpu_mb": [None]}
            for i, name in enumerate(times)}


def test_figures_are_arithmetic_on_the_step_times(report: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    times = {report.BASELINE: [0.40, 0.50, 0.45], "ITO M=2 fusion": [0.70, 0.80, 0.90],
             "ITO M=2 no fusion": [0.60, 0.70, 0.65], "ITO M=4 fusion": [1.2, 1.5, 1.3]}
    args = argparse.Namespace(model_config="tiny", batch_size=BATCH, device="cpu", profile=None)
    result = report.summarize(args, times, measured(times), PEAK)

    base = result["models"][report.BASELINE]
    flops, _ = report.analytic_flops(report.BASELINE, "tiny", 16)
    assert (base["step_s_best"], base["step_s_median"]) == (0.40, 0.45)
    assert base["samples_per_s_best"] == pytest.approx(BATCH / 0.40)
    assert base["mfu_best"] == pytest.approx(flops * BATCH / 0.40 / PEAK)
    assert base["mfu_median"] == pytest.approx(flops * BATCH / 0.45 / PEAK)
    assert base["analytic_over_counted"] == pytest.approx(flops / 2.0e8)
    assert base["step_rss_mb"] == pytest.approx(100.0) and "peak_gpu_mb" not in base
    fusion = result["ratios"]["ITO M=2 fusion / CLIP baseline (step time; goal <= 1.9)"]
    assert fusion["best"] == pytest.approx(0.70 / 0.40)
    assert fusion["median_per_round"] == pytest.approx(sorted([0.7 / 0.4, 0.8 / 0.5, 0.9 / 0.45])[1])
    assert fusion["analytic_flop_ratio"] == pytest.approx(
        result["models"]["ITO M=2 fusion"]["train_gflop_per_sample"] / base["train_gflop_per_sample"])
    assert not any("OpenCLIP" in name for name in result["ratios"])  # no peer timed, no peer ratio

    result.update(machine="test machine", device="cpu")
    report.print_table(result)
    out = capsys.readouterr().out
    assert f"| {report.BASELINE} | 1,000 | 16 | 400.0 (450.0) | 20.0 (17.8) | 1.000x |" in out


def test_peer_flops_count_every_row_of_the_full_context(report: ModuleType) -> None:
    cfg = load_config(["model=vit_b_16", "ito=clip"])
    peer, parts = report.analytic_flops(report.PEER, "vit_b_16", 77)
    ours, _ = report.analytic_flops(report.BASELINE, "vit_b_16", 24)
    assert parts["fusion"] == 0 and parts["total"] == pytest.approx(parts["image"] + parts["text"])
    assert parts["total"] == pytest.approx(35.13e9 + 5.96e9, rel=2e-3)  # OpenCLIP's ViT-B/16 count (docs/REFERENCE.md)
    assert ours == pytest.approx(train_flops_per_sample(cfg.model, cfg.ito, text_tokens=24))
    assert ours < peer
