"""The run keys of the shipped configs, frozen: cached results in users' stores are found by them.

``python -m tests.unit.golden.run_keys`` prints each config's run key and the resolved identity behind it;
``--write`` rewrites ``run_keys.json`` (only when a key is meant to change, with a note in the commit)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ito_core.artifacts import run_key
from ito_core.config import CONFIG_DIR, as_dict, load_config, load_grid

GOLDEN = Path(__file__).with_name("run_keys.json")
METHODS = ("clip", "siglip", "slip", "flair", "oner", "ito")


def golden_points() -> dict[str, list[str]]:
    """Every method's default config, every arm of experiment=method_comparison and of experiment=ito_ablation."""
    points = {f"method={m}": [f"method={m}"] for m in METHODS}
    points |= {f"method_comparison/{m}": ["experiment=method_comparison", f"comparison={m}"] for m in METHODS}
    for arm in sorted(p.stem for p in (CONFIG_DIR / "ablation").glob("*.yaml")):
        points[f"ito_ablation/{arm}"] = ["experiment=ito_ablation", f"ablation={arm}"]
    # Method options as users override them, another method's included (one schema held them all once).
    for overrides in (["method=oner", "method.oner_xmc_weight=0"], ["method=clip", "method.flair_heads=2"],
                      ["method=slip", "method.slip_hidden=32", "model=tiny"], ["method=flair", "method.flair_heads=4"],
                      ["experiment=method_comparison", "comparison=slip", "train.lr=8e-3"]):
        points[" ".join(overrides)] = overrides
    return points


def current_keys() -> dict[str, str]:
    """Each point's run key, by load_config and by load_grid (the sweep's faster path), which must agree."""
    points = golden_points()
    keys = {name: run_key(load_config(overrides)) for name, overrides in points.items()}
    assert [run_key(cfg) for cfg in load_grid(list(points.values()))] == list(keys.values())
    return keys


def main(argv: list[str]) -> None:
    for name, overrides in golden_points().items():
        cfg = load_config(overrides)
        section = {k: v for k, v in as_dict(cfg).items() if k in ("method", "model", "ito", "loss", "train", "seed")}
        print(name, run_key(cfg), json.dumps(section, sort_keys=True))
    if "--write" in argv:
        GOLDEN.write_text(json.dumps(current_keys(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
