"""FLAIR's own eval path (the spec's ``own_eval``): the stripped dual encoder's eval sets scored text-conditioned by
the pooler saved beside it (``ito_core.eval.text_conditioned``: ``*_tc`` records, ``tc_`` metrics), on the features
the suite encodes once."""

from __future__ import annotations

from pathlib import Path

from ito_core.config.schema import RunConfig
from ito_core.eval.extra import ExtraEval
from ito_core.eval.text_conditioned import text_conditioned_eval
from ito_core.methods.flair.model import load_pooler


def build(model_dir: Path, cfg: RunConfig) -> ExtraEval:
    pool = load_pooler(model_dir)
    if pool is None:
        raise FileNotFoundError(f"{model_dir}: a method=flair model folder without flair_pool.safetensors; strip "
                                "the run again (ito-sweep strip method=flair ...)")
    return text_conditioned_eval(pool)
