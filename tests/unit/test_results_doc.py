"""docs/RESULTS.md is rebuilt from the repository: its generated tables equal what docs/make_results.py makes of the
committed sweep records (docs/results/<study>/*.json), byte for byte, and the studies ran what the configs say: each
method at the learning rate the LR sweep picked, the equal-compute arms at the steps the step-cost record gives."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from ito_core.config import load_config

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def make_results() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_results", DOCS / "make_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_md_tables_equal_the_rebuilt_ones(make_results: ModuleType) -> None:
    text = (DOCS / "RESULTS.md").read_text()
    tables = make_results.blocks()
    named = {match["name"] for match in make_results.BLOCK.finditer(text)}
    assert named == set(tables), "every table make_results.py builds is in RESULTS.md, and only those"
    assert make_results.rebuilt(text, tables) == text, "run: python docs/make_results.py"


def test_each_method_trains_at_the_learning_rate_the_lr_sweep_picked(make_results: ModuleType) -> None:
    best = make_results.best_learning_rates(make_results.load_points("lr_sweep"))
    assert set(best) == {"clip", "siglip", "slip", "flair", "oner", "ito"}
    assert {m: load_config([f"comparison={m}"]).train.lr for m in best} == {m: float(lr) for m, lr in best.items()}


def test_equal_compute_arms_ran_at_the_steps_the_step_cost_gives(make_results: ModuleType) -> None:
    ran: dict[str, set[int]] = {}
    for point in make_results.load_points("equal_compute"):
        values = make_results.values_of(point)
        ran.setdefault(values["comparison"], set()).add(int(values["train.steps"]))
    expected = {m: {s for s in steps.values() if s != int(make_results.STEPS)}
                for m, steps in make_results.equal_compute_steps().items()}
    assert ran == expected, "equal steps (STEPS) are the comparison's own runs"


def test_every_study_point_ended_ok(make_results: ModuleType) -> None:
    for study in ("lr_sweep", "methods", "equal_compute", "ablation"):
        points = make_results.load_points(study)
        assert points and all(p["status"] == "ok" for p in points), study
