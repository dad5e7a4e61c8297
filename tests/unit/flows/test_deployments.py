"""prefect.yaml (work-pool path) and ``ito-sweep serve`` (served path) offer the same deployments, and the
flow's parameters are the ones docs/CLUSTER.md documents."""

from __future__ import annotations

from pathlib import Path

import prefect
import pytest
import yaml

from flows.sweep import DEPLOYMENTS, ito_sweep

ROOT = Path(__file__).resolve().parents[3]
PARAMETERS = {"overrides", "config_name", "sweep_name", "experiment", "cluster", "storage_root", "max_concurrent_train",
              "dry_run", "skip_checks"}


def test_prefect_yaml_matches_the_served_deployments() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert {d["name"]: d["parameters"] for d in spec["deployments"]} == DEPLOYMENTS
    assert {d["entrypoint"] for d in spec["deployments"]} == {"flows/sweep.py:ito_sweep"}
    template = yaml.safe_load((Path(prefect.__file__).parent / "deployments/templates/prefect.yaml").read_text())
    assert spec.keys() == template.keys() and all(d.keys() >= template["deployments"][0].keys() - {"flow_name"}
                                                  for d in spec["deployments"])


def test_flow_parameters_are_documented() -> None:
    assert set(ito_sweep.parameters.properties) == PARAMETERS
    docs = (ROOT / "docs" / "CLUSTER.md").read_text()
    assert all(f"`{name}`" in docs for name in PARAMETERS)


@pytest.mark.parametrize(("params", "message"), [
    ({"max_concurrent_train": 0}, "max_concurrent_train=0; use at least 1"),
    ({"overrides": ["ito.imagez=2"]}, "config ito.imagez: no such key; did you mean ito.images?"),
    ({"overrides": ["model=vit_b_99"]}, "config model=vit_b_99: no such option; choose one of tiny, vit_b_16"),
])
def test_a_config_error_ends_the_flow_run_failed_with_its_one_line(params: dict, message: str) -> None:
    state = ito_sweep.fn(**params)
    assert state.is_failed() and message in state.message and "\n" not in state.message
