"""bench/view_flops.py and the views set of bench/train_step.py: the cheaper-view arms' training FLOPs against
CLIP's at ViT-B/16, where issue 26 states its goal (ITO M=2, cls fusion, <= 1.1x CLIP)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ARM = "patch_dropout=0.5 (ablation=ito_cheap_views)"


def test_the_cheap_views_arm_meets_the_goal_and_full_views_do_not(load_bench: Callable[[str], ModuleType],
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bench, report = load_bench("view_flops.py"), load_bench("step_report.py")
    asserted = (ARM, "ITO cls, full views", "second_view_size=112", "patch_dropout=0.5 + second_view_size=112")
    monkeypatch.setattr(bench, "ARMS", {arm: bench.ARMS[arm] for arm in asserted})  # each arm: a Hydra compose
    bench.main(["--model-config", "vit_b_16", "--text-tokens", "24", "--json", str(tmp_path / "r.json")])
    ratio = {arm: by_tokens["24"]["ratio"] for arm, by_tokens in json.loads((tmp_path / "r.json").read_text())[
        "arms"].items()}
    assert ratio[ARM] <= bench.GOAL < ratio["ITO cls, full views"]
    assert ratio["second_view_size=112"] > bench.GOAL  # a smaller second view alone is not enough
    assert ratio["patch_dropout=0.5 + second_view_size=112"] < ratio[ARM]
    assert "| CLIP baseline | 102.97 | 1.000x | yes |" in capsys.readouterr().out
    # bench/train_step.py --variants views prices its patch-dropout model as the arm the sweep runs
    timed, _ = report.analytic_flops("ITO cls patch dropout 0.5", "vit_b_16", 24)
    clip, _ = report.analytic_flops(report.BASELINE, "vit_b_16", 24)
    assert timed / clip == pytest.approx(ratio[ARM], rel=1e-12)
    assert all(name in report.VARIANTS for name in report.VARIANT_SETS["views"])
