"""FLAIR's own eval path (the spec's ``extra_eval``): the stripped dual encoder with the pooler saved beside it,
scored text-conditioned (``ito_core.eval.text_conditioned``: ``*_tc`` records, ``tc_`` metrics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ito_core.config.schema import RunConfig
from ito_core.eval.text_conditioned import evaluate_text_conditioned
from ito_core.methods.flair.model import load_pooler


def evaluate(model: nn.Module, model_dir: Path, cfg: RunConfig, shards: dict[str, list[str]], *, model_name: str,
             pretrained: str, manifests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    pool = load_pooler(model_dir)
    if pool is None:
        raise FileNotFoundError(f"{model_dir}: a method=flair model folder without flair_pool.safetensors; strip "
                                "the run again (ito-sweep strip method=flair ...)")
    return evaluate_text_conditioned(model, pool, cfg, shards, model_name=model_name, pretrained=pretrained,
                                     manifests=manifests)
