"""Golden numerics of every method on the tiny model: the losses of 3 AdamW steps and the sha256 of the stripped
(deployable) weights and of the whole training state after them, bitwise on CPU.

``PYTHONPATH=.:tests python tests/unit/golden/numerics.py --write`` rewrites ``numerics.json``: only when a change
is meant to alter the numbers, saying so in the commit message (torchtitan's numerics rule)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from fixtures.fixed_batch import train_on_fixed_batch

from ito_core.config import load_config
from ito_core.strip import encoder_state

GOLDEN = Path(__file__).with_name("numerics.json")
METHODS = ("clip", "siglip", "slip", "flair", "oner", "ito")
TINY = ["model=tiny", "model.vision_layers=1", "model.text_layers=1", "model.embed_dim=16", "model.vision_width=16",
        "model.text_width=16", "model.vision_heads=2", "model.text_heads=2", "model.image_size=16",
        "model.patch_size=8", "model.context_length=16", "train.batch_size=4"]
OPTIONS = {"slip": ["method.slip_hidden=32", "method.slip_dim=8"], "flair": ["method.flair_heads=2"]}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def method_numerics(method: str, *, steps: int = 3) -> dict[str, object]:
    cfg = load_config([f"method={method}", *TINY, *OPTIONS.get(method, [])])
    torch.set_num_threads(1)  # the sums' order, hence the bits, depends on the thread count
    model, losses = train_on_fixed_batch(cfg, lr=1e-3, steps=steps)
    full = model.state_dict()
    return {"losses": [loss.hex() for loss in losses], "stripped_sha256": state_sha256(encoder_state(full)),
            "state_sha256": state_sha256(full)}


def current() -> dict[str, object]:
    return {method: method_numerics(method) for method in METHODS}


if __name__ == "__main__":
    result = current()
    print(json.dumps(result, indent=2))
    if "--write" in sys.argv:
        GOLDEN.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
