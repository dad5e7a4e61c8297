"""Grid expansion as Hydra's ``-m`` does it: lists, range(), choice(), the config's ``sweep:`` section and
which override wins; the deployment presets."""

from __future__ import annotations

import pytest

from flows.grid import expand_grid, grid_axes, with_presets
from ito_core.config import load_config, load_grid, override_key


def _values(points: list[list[str]], key: str) -> list[str]:
    return [dict(o.split("=", 1) for o in point)[key] for point in points]


def test_lists_and_ranges_expand_to_the_cartesian_product() -> None:
    points = expand_grid(["model=tiny", "ito.fusion=none", "ito.images=1,2", "seed=range(3)"])
    assert len(points) == 6
    assert sorted(zip(_values(points, "ito.images"), _values(points, "seed"), strict=True)) == [
        (m, s) for m in ("1", "2") for s in ("0", "1", "2")]
    assert all(point[:2] == ["model=tiny", "ito.fusion=none"] for point in points), "fixed ones first"
    assert [load_config(p).seed for p in points[:3]] == [0, 1, 2]


def test_choice_sweeps_expand() -> None:
    points = expand_grid(["ito.fusion=choice(none,transformer)"])
    assert _values(points, "ito.fusion") == ["none", "transformer"]


def test_the_config_sweep_section_is_a_grid() -> None:
    points = expand_grid(["experiment=demo"])
    assert sorted(zip(_values(points, "ito.images"), _values(points, "ito.fusion"), strict=True)) == [
        ("1", "none"), ("1", "transformer"), ("2", "none"), ("2", "transformer")]


@pytest.mark.parametrize(("override", "images", "fusions"), [
    ("ito.images=4,8", {"4", "8"}, {"none", "transformer"}),  # a sweep override replaces the config's axis
    ("ito.images=4", {"4"}, {"none", "transformer"}),  # a fixed one pins it
    ("ito.fusion=none", {"1", "2"}, {"none"}),
])
def test_overrides_win_over_the_config_sweep_section(override: str, images: set[str], fusions: set[str]) -> None:
    points = expand_grid(["experiment=demo", override])
    configs = [load_config(p) for p in points]
    assert {str(c.ito.images) for c in configs} == images and {c.ito.fusion for c in configs} == fusions
    assert len(points) == len(images) * len(fusions)


@pytest.mark.parametrize("overrides", [
    ["model=tiny", "ito.texts=2", "ito.fusion_positives=supcon", "ito.images=1,2", "train.lr=1e-4,2e-4"],
    ["experiment=demo", "seed=0,1"],  # a group preset, the config's own axes and a value axis
    ["ablation=clip,ito_m4", "seed=0,1", "ito.texts=2"],  # a group axis: one composition per choice
    ["model=tiny", "ito=clip,ito", "ito.images=2"],  # a value inside a group that is an axis
])
def test_load_grid_equals_composing_every_point(overrides: list[str]) -> None:
    points = expand_grid(overrides)
    assert load_grid(points) == [load_config(point) for point in points]


@pytest.mark.parametrize("bad", ["ito.imagez=2", "train.lr=fast", "ito.images=0",  # unknown key, type, value
                                 "cluster.extra_sbatch.hold=true"])  # a new dict key needs +, as with Hydra
def test_load_grid_raises_the_error_load_config_raises(bad: str) -> None:
    with pytest.raises(ValueError, match=bad.split("=")[0]) as fast:
        load_grid([["model=tiny"], ["model=tiny", bad]])
    with pytest.raises(ValueError) as one:
        load_config(["model=tiny", bad])
    assert str(fast.value) == str(one.value)


def test_interval_sweeps_are_refused_naming_the_override() -> None:
    with pytest.raises(ValueError, match=r"train.lr=interval\(0.1,1\).*range\(\)"):
        expand_grid(["train.lr=interval(0.1,1)"])


def test_grid_axes_are_the_keys_that_vary_last_value_winning() -> None:
    points = [["train.steps=6", "ito.images=1", "train.steps=4"], ["train.steps=4", "ito.images=2"]]
    assert grid_axes(points) == ["ito.images"]


def test_presets_fill_only_keys_the_overrides_leave_unset() -> None:
    overrides = ["cluster=local", "+extra.key=1"]
    presets = {"cluster": "slurm", "experiment": "demo", "storage.root": "", "extra.key": "2"}
    assert with_presets(overrides, presets) == ["experiment=demo", "cluster=local", "+extra.key=1"]
    assert override_key("~a.b") == "a.b"


def test_hydra_sweeper_params_section_expands_like_sweep(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import ito_core.config.loading

    configs = tmp_path / "configs"
    shutil.copytree(ito_core.config.loading.CONFIG_DIR, configs)
    (configs / "experiment" / "hydra_grid.yaml").write_text(
        "# @package _global_\nhydra:\n  sweeper:\n    params:\n      seed: 0,1\n      ito.images: 1,2\n")
    monkeypatch.setattr(ito_core.config.loading, "CONFIG_DIR", configs)

    points = expand_grid(["experiment=hydra_grid"])

    assert [c.seed for c in load_grid([[*p, "ito.fusion=none"] for p in points])] == [0, 0, 1, 1]
    assert len(points) == 4 and grid_axes(points) == ["seed", "ito.images"]
    assert expand_grid(["experiment=hydra_grid", "seed=5"]) == [
        ["experiment=hydra_grid", "seed=5", "ito.images=1"], ["experiment=hydra_grid", "seed=5", "ito.images=2"]]


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", ".hidden", "/abs"])
def test_a_sweep_name_that_would_leave_the_store_is_refused_before_any_job(name: str) -> None:
    from flows.sweep import ito_sweep

    state = ito_sweep.fn(overrides=["train.steps=1"], sweep_name=name)
    assert state.is_failed() and state.message.startswith(f"sweep_name={name!r}")
