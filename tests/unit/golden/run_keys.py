"""The run keys of the shipped configs, frozen: cached results in users' stores are found by them.

``python -m tests.unit.golden.run_keys`` prints each config's run key and the resolved identity behind it;
``--write`` rewrites ``run_keys.json`` (only when a key is meant to change, with a note in the commit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ito_core.artifacts import run_key
from ito_core.config import CONFIG_DIR, as_dict, load_config

GOLDEN = Path(__file__).with_name("run_keys.json")
METHODS = ("clip", "siglip", "slip", "flair", "oner", "ito")


def golden_points() -> dict[str, list[str]]:
    """Every method's default config, every arm of experiment=method_comparison and of experiment=ito_ablation."""
    points = {f"method={m}": [f"method={m}"] for m in METHODS}
    points |= {f"method_comparison/{m}": ["experiment=method_comparison", f"comparison={m}"] for m in METHODS}
    for arm in sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")):
        points[f"ito_ablation/{arm}"] = ["experiment=ito_ablation", f"ablation={arm}"]
    return points


def current_keys() -> dict[str, str]:
    return {name: run_key(load_config(overrides)) for name, overrides in golden_points().items()}


def main(argv: list[str]) -> None:
    for name, overrides in golden_points().items():
        cfg = load_config(overrides)
        section = {k: v for k, v in as_dict(cfg).items() if k in ("method", "model", "ito", "loss", "train", "seed")}
        print(name, run_key(cfg), json.dumps(section, sort_keys=True))
    if "--write" in argv:
        GOLDEN.write_text(json.dumps(current_keys(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
