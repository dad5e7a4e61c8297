"""OneR (arXiv 2211.11153): one transformer for images, texts and (image, text) sequences (``model.py``), trained
with the ITC, XMC, CIC and CMC losses (``loss.py``). Its deployable model is that single tower. Options:
``method.oner_<loss>_weight``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ito_core.config.checks import require
from ito_core.config.schema import MethodConfig, RunConfig, fuses
from ito_core.methods.spec import RUN_KEY_LEGACY, Architecture, MethodSpec

LOSSES = ("itc", "xmc", "cic", "cmc")
NO_OPEN_CLIP = ("OpenCLIP's `CLIP` holds a vision tower and a text tower; a single tower shared by both "
                "modalities has no place in that layout")


@dataclass
class OneRConfig(MethodConfig):
    # Weights of OneR's four InfoNCE losses (docs/METHOD.md); 0 skips a loss (and, for cic / cmc, the model's joint
    # image+text pass). 1.0 each = the paper's full contrastive objective.
    name: str = "oner"
    oner_itc_weight: float = 1.0  # F(I) vs F(T)
    oner_xmc_weight: float = 1.0  # cross-modal mixup: mix(I_i, T_i+1) vs mix(I_i+1, T_i)
    oner_cic_weight: float = 1.0  # contextual invariance: mix(F(I|T), F(T|I)) vs mix(F(I), F(T))
    oner_cmc_weight: float = 1.0  # contextual mixup: F(I,T | I,T) vs mix(F(I), F(T))


def validate(cfg: RunConfig) -> None:
    """OneR reads one view and one caption per sample, has no fusion module and only InfoNCE losses."""
    for key in ("images", "texts"):
        require(getattr(cfg.ito, key) == 1, f"ito.{key}", f"{getattr(cfg.ito, key)} with method=oner (one image view "
                "and one caption per sample)", f"set ito.{key}=1 (ito=clip, as configs/method/oner.yaml does)")
    require(not fuses(cfg.ito), "ito.fusion", f"{cfg.ito.fusion!r} (weight {cfg.ito.fusion_weight}) with method=oner",
            "set ito.fusion=none: OneR has no fusion module (its CIC/CMC losses run joint sequences through the "
            "one tower)")
    require(cfg.loss.name == "clip", "loss.name", f"{cfg.loss.name!r} with method=oner (InfoNCE losses only)",
            "set loss.name=clip")
    weights = {key: getattr(cfg.method, f"oner_{key}_weight") for key in LOSSES}
    for key, weight in weights.items():
        require(weight >= 0, f"method.oner_{key}_weight", f"{weight}", "use a weight >= 0 (0 skips that loss)")
    require(any(w > 0 for w in weights.values()), "method.oner_*_weight", "every OneR loss weight is 0",
            "give at least one of oner_itc/xmc/cic/cmc_weight a positive weight")
    require(weights["xmc"] == 0 or cfg.train.batch_size >= 3, "train.batch_size",
            f"{cfg.train.batch_size} with method.oner_xmc_weight > 0 (with 2 samples XMC's query of one sample "
            "is the key of the other)", "use train.batch_size >= 3, or method.oner_xmc_weight=0")


def one_tower_card(cfg: RunConfig, manifest: dict[str, Any]) -> tuple[str, str]:
    return (f"OneR single tower `{cfg.model.name}`",
            f"""One transformer for image patches and text tokens (OneR, arXiv 2211.11153), trained with the
ITC, XMC, CIC and CMC losses; it has no training-only weights: {manifest["num_parameters"]:,} parameters.""")


ONE_TOWER = Architecture(name="one_tower", build="ito_core.methods.oner.model:build_one_tower", card=one_tower_card,
                         open_clip=False, no_open_clip=NO_OPEN_CLIP)

SPEC = MethodSpec(name="oner", config=OneRConfig, validate=validate, run_key=RUN_KEY_LEGACY,
                  builders="ito_core.methods.oner.model", architecture=ONE_TOWER,
                  flops_uncounted="its joint image+text passes (CIC, CMC)")
