"""FLAIR (arXiv 2412.03561): the CLIP dual encoder plus a training-time text-conditioned attention pooling, trained
with two sigmoid losses (``model.py``); the pooler is kept beside the stripped model for FLAIR's text-conditioned
eval path (``eval.py``). Options: ``method.flair_heads``."""

from __future__ import annotations

from dataclasses import dataclass

from ito_core.config.checks import require, world_size
from ito_core.config.schema import MethodConfig, RunConfig, fuses
from ito_core.methods.spec import RUN_KEY_LEGACY, MethodSpec, OwnEval


@dataclass
class FlairConfig(MethodConfig):
    name: str = "flair"
    flair_heads: int = 8  # heads of the text-conditioned attention pooling (the released model: 8)


def validate(cfg: RunConfig) -> None:
    ito, heads = cfg.ito, cfg.method.flair_heads  # type: ignore[attr-defined]
    require(ito.images == 1, "ito.images", f"method=flair trains on one image view, got {ito.images}",
            "set ito.images=1 (configs/method/flair.yaml does)")
    require(ito.texts >= 2, "ito.texts", f"method=flair samples K >= 2 sub-captions per image, got {ito.texts}",
            "set ito.texts>=2 (the released recipe: 8)")
    require(not fuses(ito), "ito.fusion", f"method=flair has no ITO fusion module, got ito.fusion={ito.fusion}",
            "set ito.fusion=none")
    require(cfg.loss.name == "siglip", "loss.name", f"method=flair's sigmoid losses need the learnable logit bias "
            f"of loss=siglip, got {cfg.loss.name!r}", "set loss=siglip (configs/method/flair.yaml does)")
    require(heads >= 1 and cfg.model.embed_dim % heads == 0, "method.flair_heads",
            f"{heads} heads do not divide model.embed_dim={cfg.model.embed_dim}", "pick a divisor (default 8)")
    per_rank = cfg.train.batch_size // world_size(cfg)
    require(cfg.train.micro_batch_size in (0, per_rank), "train.micro_batch_size",
            f"method=flair's loss calls the model's pooling module on the gathered texts, so accumulating "
            f"{cfg.train.micro_batch_size}-sample micro-batches would count its gradient once per micro-batch",
            "set train.micro_batch_size=0 (no accumulation) and lower train.batch_size if memory is short")


SPEC = MethodSpec(
    name="flair", config=FlairConfig, validate=validate, run_key=RUN_KEY_LEGACY,
    builders="ito_core.methods.flair.model", save_files="ito_core.methods.flair.model:save_files",
    own_eval=OwnEval(build="ito_core.methods.flair.eval:build", prefix="tc_",
                     tasks=("zeroshot_classification", "zeroshot_retrieval")),
    flops_uncounted="its text-conditioned pooling of every image by every caption",
)
