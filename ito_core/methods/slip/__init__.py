"""SLIP (arXiv 2112.12750): CLIP's InfoNCE on view 0 plus SimCLR on views 1-2 through a training-only MLP head
(``model.py``); the deployed model is a plain CLIP dual encoder. Options: ``method.slip_*``."""

from __future__ import annotations

from dataclasses import dataclass

from ito_core.config.checks import accumulation_steps, require, world_size
from ito_core.config.schema import MethodConfig, RunConfig, fuses
from ito_core.methods.spec import RUN_KEY_LEGACY, MethodSpec


@dataclass
class SlipConfig(MethodConfig):
    # The training-only SimCLR MLP on the SSL views and its loss
    name: str = "slip"
    slip_hidden: int = 4096  # hidden width of the 3-layer MLP head (Linear-BN-ReLU x 2, Linear)
    slip_dim: int = 256  # output width of the head (the SimCLR embedding)
    slip_temperature: float = 0.1  # NT-Xent temperature (fixed, not learned)
    slip_weight: float = 1.0  # L = L_clip + slip_weight * L_simclr


def validate(cfg: RunConfig) -> None:
    m = cfg.method
    assert isinstance(m, SlipConfig), type(m)
    require(cfg.ito.images == 3, "ito.images", f"method=slip got {cfg.ito.images} image view(s)",
            "set ito.images=3: view 0 for the CLIP loss, views 1-2 for SimCLR (configs/method/slip.yaml does)")
    require(not fuses(cfg.ito), "ito.fusion", "method=slip trains no fusion module",
            "set ito.fusion=none (configs/method/slip.yaml does), or use method=ito for fusion")
    require(cfg.loss.name == "clip", "loss.name", f"method=slip is CLIP's InfoNCE + SimCLR, got {cfg.loss.name!r}",
            "set loss=clip")
    for key in ("slip_hidden", "slip_dim"):
        require(getattr(m, key) >= 1, f"method.{key}", f"{getattr(m, key)}", "use a positive width")
    require(m.slip_temperature > 0, "method.slip_temperature", f"{m.slip_temperature}", "use a temperature > 0, "
            "SLIP's is 0.1")
    require(m.slip_weight > 0, "method.slip_weight", f"{m.slip_weight}",
            "use a weight > 0 (SLIP's is 1.0), or method=clip for no SimCLR term")


def warnings(cfg: RunConfig) -> list[str]:
    if accumulation_steps(cfg.train, world_size(cfg)) > 1:
        return ["config method=slip with train.micro_batch_size accumulation: the SimCLR head's BatchNorm "
                "statistics are those of each micro-batch across ranks, not of the whole batch; set "
                "train.micro_batch_size=0 for SLIP's global-batch statistics"]
    return []


SPEC = MethodSpec(name="slip", config=SlipConfig, validate=validate, warnings=warnings, run_key=RUN_KEY_LEGACY,
                  builders="ito_core.methods.slip.model", flops_uncounted="its SimCLR head")
