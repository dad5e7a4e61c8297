"""CyCLIP (Goel et al. 2022, "CyCLIP: Cyclic Contrastive Language-Image Pretraining", arXiv 2205.14459), defined
only in the test package: the proof that a method is its own module, YAML and tests (test_extension_method.py).

CLIP's InfoNCE plus two cyclic-consistency terms on the normalised embeddings, as the released code
(github.com/goel-shashank/CyCLIP, ``train.py``): in-modal, the image-image similarities match the text-text ones;
cross-modal, <I_j, T_k> matches <I_k, T_j>. The deployed model is a plain CLIP dual encoder. Options:
``method.cyclip_inmodal_weight``, ``method.cyclip_crossmodal_weight`` (the paper's lambda_1, lambda_2 = 0.25)."""

from __future__ import annotations

from dataclasses import dataclass

from ito_core.config.checks import require
from ito_core.config.schema import MethodConfig, RunConfig, fuses
from ito_core.methods.spec import MethodSpec


@dataclass
class CyclipConfig(MethodConfig):
    name: str = "cyclip"
    cyclip_inmodal_weight: float = 0.25  # lambda_1: image-image vs text-text similarities
    cyclip_crossmodal_weight: float = 0.25  # lambda_2: <I_j, T_k> vs <I_k, T_j>


def validate(cfg: RunConfig) -> None:
    for key in ("images", "texts"):
        require(getattr(cfg.ito, key) == 1, f"ito.{key}", f"{getattr(cfg.ito, key)} with method=cyclip (one image "
                "and one caption per sample)", f"set ito.{key}=1 (ito=clip, as configs/method/cyclip.yaml does)")
    require(not fuses(cfg.ito), "ito.fusion", "method=cyclip trains no fusion module", "set ito.fusion=none")
    require(cfg.loss.name == "clip", "loss.name", f"{cfg.loss.name!r} with method=cyclip (InfoNCE)", "set loss=clip")
    for key in ("cyclip_inmodal_weight", "cyclip_crossmodal_weight"):
        require(getattr(cfg.method, key) >= 0, f"method.{key}", f"{getattr(cfg.method, key)}", "use a weight >= 0")


SPEC = MethodSpec(name="cyclip", config=CyclipConfig, validate=validate, builders=f"{__name__}.model",
                  flops_uncounted="")
