"""A method defined only in the test package (tests/integration/cyclip: its module, its YAML) trains 2 steps,
strips and evaluates through the CLI a user types, with no file of ito_core, cluster or flows naming it: the
registry finds it through $ITO_SWEEP_METHODS, Hydra finds its YAML through hydra.searchpath."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
METHOD = [f"hydra.searchpath=[file://{HERE / 'cyclip' / 'configs'}]", "method=cyclip"]
SMALL = ["train.steps=2", "train.warmup_steps=0", "train.batch_size=8", "wandb=disabled", "data.max_train_samples=64",
         "data.shapes_train=64", "data.shapes_eval=64", "eval.max_samples=64", "data.samples_per_shard=32",
         "eval.umap_points=0", "data.num_workers=0"]


def ito_sweep(stage: str, overrides: list[str], *, ok: bool = True) -> str:
    """``ito-sweep <stage> <overrides>`` in a fresh process that knows the method only from the environment."""
    env = {**os.environ, "ITO_SWEEP_METHODS": "cyclip",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from flows.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, stage, *overrides], cwd=ROOT, capture_output=True, text=True,
                            timeout=900, env=env)
    output = result.stdout + result.stderr
    assert (result.returncode == 0) == ok, f"ito-sweep {stage} (expected ok={ok}):\n{output[-6000:]}"
    return output


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("extension")
    overrides = [*METHOD, *SMALL, f"storage.root={root / 'store'}", f"cluster.work_dir={root / 'work'}"]
    output = ito_sweep("train", overrides)
    key = re.search(r"train done for (runs/[0-9a-f]+)", output).group(1)
    return root / "store" / key, overrides


def test_a_bad_option_of_the_new_method_is_refused_before_any_work(tmp_path: Path) -> None:
    output = ito_sweep("train", [*METHOD, *SMALL, "method.cyclip_inmodal_weight=-1",
                                 f"storage.root={tmp_path / 'store'}", f"cluster.work_dir={tmp_path / 'work'}"],
                       ok=False)
    assert "config method.cyclip_inmodal_weight: -1.0; use a weight >= 0" in output
    assert not (tmp_path / "store").exists()


def test_the_new_method_trains_strips_and_evaluates_through_the_cli(run_dir: tuple[Path, list[str]]) -> None:
    run, overrides = run_dir
    train = json.loads((run / "train" / "manifest.json").read_text())
    assert train["step"] == 2 and train["config"]["method"] == {"name": "cyclip", "cyclip_inmodal_weight": 0.25,
                                                                "cyclip_crossmodal_weight": 0.25}
    assert {"inmodal_loss", "crossmodal_loss", "align_loss"} <= set(train["history"][-1])

    ito_sweep("strip", overrides)
    model_config = json.loads((run / "model" / "model_config.json").read_text())
    strip = json.loads((run / "model" / "manifest.json").read_text())
    assert model_config["architecture"] == "dual_encoder" and strip["dropped_parameters"] == 0
    assert (run / "model" / "open_clip_model.safetensors").is_file()

    ito_sweep("eval", overrides)
    records = json.loads((run / "eval" / "manifest.json").read_text())["records"]
    assert {("fashion_mnist", "zeroshot_classification"), ("shapes", "zeroshot_retrieval")} <= {
        (r["dataset"], r["task"]) for r in records}
    assert "# CYCLIP dual encoder" in (run / "model" / "README.md").read_text()
