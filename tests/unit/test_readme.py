"""The README's test command is the one CI runs, and the demo command runs the demo experiment."""

from __future__ import annotations

import re
from pathlib import Path

from ito_core.data.openclipart import OPENCLIPART_PACKAGE
from ito_core.data.tuxpaint import TUXPAINT_PACKAGE

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks if "apt-get install" in block]


def test_readme_has_exactly_two_setup_commands() -> None:
    demo, tests = _readme_commands()
    assert demo.endswith("ito-sweep run experiment=demo") and "torch==2.13.0" in demo
    assert tests.endswith("pytest") and "torch==2.13.0" in tests


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = _readme_commands()
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_readme_cost_figures_are_what_plan_computes() -> None:
    """README's expected cost quotes `ito-sweep plan experiment=ito_cc3m` (flows.cost on ito_core.flops)."""
    from flows.cost import assumed_throughput, point_cost
    from ito_core.config import load_config

    text = " ".join((ROOT / "README.md").read_text().split())
    quoted = re.search(r"ITO \(M=2, fusion on\) ViT-B/16 step is ([\d.]+) GFLOP .*?`ablation=clip`: ([\d.]+),.*?"
                       r"are ([\d.e+]+) FLOP: ([\d.]+) H100-hours at 40 % MFU, ([\d.]+) at 15 %.*?CC12M is ([\d.]+)x "
                       r"that.*?# ~(\d+) H100-hours at 40 % MFU", text)
    assert quoted, "README's cost paragraph changed: update this test with it"
    cc3m, clip, cc12m = (load_config([f"experiment={name}", "data.input=/data/x.tar", *extra]) for name, extra in
                         [("ito_cc3m", []), ("ito_cc3m", ["ablation=clip"]), ("ito_cc12m", [])])
    ito, at_15 = (point_cost(cc3m, assumed_throughput(cc3m, mfu=mfu)) for mfu in (0.4, 0.15))
    big = point_cost(cc12m, assumed_throughput(cc12m, mfu=0.4))
    assert quoted.groups() == (f"{ito.train_flops_per_sample / 1e9:.1f}",
                               f"{point_cost(clip, None).train_flops_per_sample / 1e9:.1f}",
                               f"{ito.total_flops:.3g}", f"{ito.device_hours:.1f}", f"{at_15.device_hours:.1f}",
                               f"{big.total_flops / ito.total_flops:.1f}", f"{big.device_hours:.0f}")


def test_both_setup_commands_install_the_embedded_data_packages() -> None:
    for command in _readme_commands():
        assert all(f" {package} " in command for package in ("dataset-fashion-mnist", OPENCLIPART_PACKAGE,
                                                              TUXPAINT_PACKAGE))
