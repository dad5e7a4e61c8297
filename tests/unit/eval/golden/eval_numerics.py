"""Golden eval records of a tiny trained FLAIR and CLIP model: every metric of every eval task (FLAIR's
text-conditioned ones included) as float hex, bitwise on CPU with one thread. They were written by the eval path
before it read and encoded each eval set once (issue 24), so the test holds that restructuring to equal numbers.

``PYTHONPATH=.:tests python tests/unit/eval/golden/eval_numerics.py --write`` rewrites ``eval_numerics.json``:
only when a change is meant to alter the numbers, saying so in the commit message."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from fixtures.fixed_batch import train_on_fixed_batch
from fixtures.stripped_model import commit_model_folder

from ito_core.config import load_config
from ito_core.eval.stage import run_eval
from ito_core.prep import prepare
from ito_core.storage import LocalStore

GOLDEN = Path(__file__).with_name("eval_numerics.json")
METHODS = ("clip", "flair")
TINY = ["model=tiny", "model.vision_layers=1", "model.text_layers=1", "model.embed_dim=16", "model.vision_width=16",
        "model.text_width=16", "model.vision_heads=2", "model.text_heads=2", "model.image_size=16",
        "model.patch_size=8", "model.context_length=16", "train.batch_size=4", "method.flair_heads=2",
        "data.image_size=32", "data.sources=[shapes]", "data.shapes_train=8", "data.shapes_eval=12",
        "eval.zero_shot=shapes", "eval.retrieval=shapes", "eval.linear_probe=shapes", "eval.modality_gap=shapes",
        "eval.batch_size=5", "eval.umap_points=0", "eval.probe_c_grid=[1.0]"]


def trained_state(cfg: Any, *, steps: int = 3) -> dict[str, torch.Tensor]:
    """The method's training model after ``steps`` AdamW steps on a fixed random batch."""
    model, _ = train_on_fixed_batch(cfg, lr=1e-2, steps=steps)
    return model.state_dict()


def eval_records(method: str, root: Path) -> list[dict[str, Any]]:
    """The eval stage's records for the method's tiny trained model, stripped as the strip stage writes it."""
    cfg = load_config([f"method={method}", *TINY, f"storage.root={root / 'store'}", f"cluster.work_dir={root}/work"])
    torch.set_num_threads(1)  # the sums' order, hence the bits, depends on the thread count
    store = LocalStore(cfg.storage.root)
    keys = prepare(cfg.data, cfg.eval, store)
    commit_model_folder(store, cfg, trained_state(cfg), run_key="runs/golden", steps=3)
    return run_eval(cfg, store=store, run_key="runs/golden", data_keys=keys, staging=root / "staging")


def as_golden(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"dataset": r["dataset"], "task": r["task"],
             "metrics": {k: float(v).hex() for k, v in sorted(r["metrics"].items())}} for r in records]


def current() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {method: as_golden(eval_records(method, Path(tmp) / method)) for method in METHODS}


if __name__ == "__main__":
    result = current()
    print(json.dumps(result, indent=1))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
