"""Every method of ITO's comparison through the CLI a user types: ``ito-sweep train|strip|eval method=<m>`` trains 3
steps under ZeRO-2 on 2 gloo ranks, strips the training-only modules and scores the deployable model with the eval
suite. The prepared data is shared by every method (one store for the module), so each case pays for its own stages
only."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from ito_core.artifacts import RunLayout, run_key
from ito_core.config import load_config
from ito_core.methods import registry

ROOT = Path(__file__).resolve().parents[2]
ISSUE_COMMAND = ["train.steps=3", "train.warmup_steps=0", "train.batch_size=16", "wandb=disabled"]
SMALL_DATA = ["data.max_train_samples=64", "data.shapes_train=64", "data.shapes_eval=64", "eval.max_samples=64",
              "data.samples_per_shard=32", "eval.umap_points=0", "data.num_workers=0"]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("methods")


def ito_sweep(stage: str, overrides: list[str]) -> str:
    """``ito-sweep <stage> <overrides>`` in a fresh process (this checkout's code); its output, or fail with it."""
    code = "import sys; from flows.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", code, stage, *overrides], cwd=ROOT, capture_output=True,
                            text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"ito-sweep {stage} failed:\n{output[-6000:]}"
    return output


@pytest.mark.parametrize("method", sorted(registry.names()))
def test_method_trains_strips_and_evaluates_through_the_cli(method: str, store_root: Path) -> None:
    overrides = [f"method={method}", *ISSUE_COMMAND, *SMALL_DATA, "cluster.tasks_per_node=2", "deepspeed=zero2",
                 f"storage.root={store_root / 'store'}", f"cluster.work_dir={store_root / 'work'}"]
    run = RunLayout(run_key(load_config(overrides)))
    run_dir = store_root / "store" / run.key

    ito_sweep("train", overrides)
    train = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert train["step"] == 3 and train["config"]["method"]["name"] == method
    assert all(key.startswith(("step", "lr", "loss", "skipped", "samples", "logit", "mfu")) or key.endswith("loss")
               for key in train["history"][-1]), train["history"][-1]

    ito_sweep("strip", overrides)
    strip = json.loads((run_dir / "model" / "manifest.json").read_text())
    with safe_open(run_dir / "model" / "model.safetensors", "pt") as weights:
        shapes = [weights.get_slice(name).get_shape() for name in weights.keys()]  # noqa: SIM118 (no __iter__)
    assert sum(math.prod(shape) for shape in shapes) == strip["num_parameters"]
    # Methods with training-only modules leave them behind; CLIP and SigLIP have none.
    assert (strip["dropped_parameters"] > 0) == (method not in ("clip", "siglip", "oner"))

    ito_sweep("eval", overrides)
    records = json.loads((run_dir / "eval" / "manifest.json").read_text())["records"]
    tasks = {(r["dataset"], r["task"]) for r in records}
    assert {("fashion_mnist", "zeroshot_classification"), ("shapes", "zeroshot_retrieval"),
            ("fashion_mnist", "linear_probe")} <= tasks, tasks
    zero_shot = next(r for r in records if r["task"] == "zeroshot_classification")
    assert 0.0 <= zero_shot["metrics"]["acc1"] <= 1.0

