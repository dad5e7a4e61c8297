"""FLAIR's text-conditioned eval path: every image pooled once per candidate text, scored against that text.

A CLIP scores an (image, text) pair with one dot product of two global embeddings. FLAIR (arXiv 2412.03561)
can also score it as ``cos(v_tc(i, t), t)``, where ``v_tc(i, t)`` is image i's patch tokens pooled by text
t's global embedding (``ito_core.methods.flair.TextConditionedPool``, saved beside the stripped model as
``flair_pool.safetensors``). This module runs zero-shot classification (query: the class embedding, the mean
of its normalised prompt embeddings) and retrieval (query: each caption) that way, with the suite's metric
definitions, as an extra eval path (``text_conditioned_eval``) on the features the suite encoded once; records
carry the task name suffixed ``_tc`` and metric names prefixed ``tc_`` so that the flat
``<dataset>/<metric>`` summary keeps both paths. Cost: :func:`tc_scoring_flops` (docs/METHOD.md "FLAIR").

Shape legend: N images, P patch tokens, E joint dim, Q queries (classes or captions), C classes, T captions,
n / q chunks of images / queries.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ito_core.config import RunConfig
from ito_core.eval.encode import EvalFeatures, encoding, zero_shot_classifier
from ito_core.eval.extra import ExtraEval
from ito_core.eval.features import model_device
from ito_core.eval.names import TC_TASKS, eval_plan
from ito_core.eval.ranking import classification_metrics, true_class_ranks
from ito_core.eval.retrieval import dense_text_ids, describes
from ito_core.methods.flair import TextConditionedPool
from ito_core.models.dual_encoder import DualEncoder

POOLED_FLOATS_PER_CHUNK = 2**24  # bounds the [n, q, E] pooled block (64 MiB in fp32)


def tc_scores(pool: TextConditionedPool, patches_NPE: torch.Tensor, queries_QE: torch.Tensor, *,
              image_chunk: int = 256) -> torch.Tensor:
    """``[N, Q]`` cosine of each image pooled by each query with that query, in chunks of images and queries."""
    E = patches_NPE.shape[-1]
    query_chunk = max(1, POOLED_FLOATS_PER_CHUNK // (min(image_chunk, len(patches_NPE)) * E))
    queries_unit_QE = F.normalize(queries_QE.float(), dim=-1)
    rows = []
    for start in range(0, len(patches_NPE), image_chunk):
        patches_nPE = patches_NPE[start:start + image_chunk]
        cols = []
        for q0 in range(0, len(queries_QE), query_chunk):
            pooled_nqE = F.normalize(pool(queries_QE[q0:q0 + query_chunk], patches_nPE).float(), dim=-1)
            cols.append((pooled_nqE * queries_unit_QE[None, q0:q0 + query_chunk]).sum(-1))
        rows.append(torch.cat(cols, dim=1))
    return torch.cat(rows)


def ranks_from_scores(scores_QC: torch.Tensor, match_QC: torch.Tensor) -> torch.Tensor:
    """``ranking.best_match_ranks`` on a score matrix: per query row, how many non-matching candidates score at
    least as high as its best matching one (ties count against it; NaN is the worst score)."""
    scores_QC = scores_QC.masked_fill(scores_QC.isnan(), float("-inf"))
    best_Q = scores_QC.masked_fill(~match_QC, float("-inf")).amax(dim=1)
    return ((scores_QC >= best_Q[:, None]) & ~match_QC).sum(dim=1)


def tc_retrieval_metrics(scores_NT: torch.Tensor, text_to_image_T: torch.Tensor, *,
                         text_ids_T: torch.Tensor | None = None, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """``retrieval.retrieval_metrics``' recalls from an [images, captions] score matrix (a caption matches every
    image it describes: the same text, by ``text_ids_T``)."""
    text_ids_T = dense_text_ids(text_ids_T, len(text_to_image_T), device=text_to_image_T.device)
    match_NT = (describes(text_ids_T, text_to_image_T, len(scores_NT)).to_dense() > 0).T[:, text_ids_T]
    text_query_ranks_T = ranks_from_scores(scores_NT.T, match_NT.T)
    image_query_ranks_N = ranks_from_scores(scores_NT, match_NT)
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = (text_query_ranks_T < k).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (image_query_ranks_N < k).float().mean().item()
    return metrics


def tc_scoring_flops(*, images: int, queries: int, patches: int, dim: int) -> dict[str, float]:
    """Matmul FLOPs (2 per multiply-accumulate) of scoring every image against every query, both ways, given
    the encoded features. CLIP: one E-dim dot product per pair. Text-conditioned: per query one Q projection,
    per image K and V projections of its patches, per pair attention over P + 1 keys and the output projection.
    """
    clip = 2 * images * queries * dim
    tc = (2 * queries * dim**2 + 2 * 2 * images * patches * dim**2
          + images * queries * (2 * 2 * (patches + 1) * dim + 2 * dim**2 + 2 * dim))
    return {"clip_flops": float(clip), "tc_flops": float(tc)}


def patch_tokens(model: DualEncoder, pixels_BCHW: torch.Tensor) -> torch.Tensor:
    """Each image's patch tokens in the joint space, CLS left out ``[B, P, E]``: computed beside the suite's image
    features on the same pixel batches (a second image-tower pass: the pooled features stay the suite's own)."""
    _, tokens_BTE = model.visual(pixels_BCHW, return_tokens=True)
    return tokens_BTE[:, 1:].float()


def text_conditioned_eval(pool: TextConditionedPool) -> ExtraEval:
    """FLAIR's extra eval path: zero-shot classification and retrieval scored text-conditioned, on the sets the
    suite runs them on, from the features the suite encoded (``evaluate`` has checked the sets and tasks)."""

    def run(model: DualEncoder, eval_sets: dict[str, EvalFeatures], cfg: RunConfig) -> list[dict[str, Any]]:
        pooler = pool.to(model_device(model)).eval()
        plan = eval_plan(cfg.eval)
        return [{"dataset": name, "task": f"{task}_tc",
                 "metrics": {f"tc_{k}": v for k, v in _score(model, pooler, feats, task, cfg).items()}}
                for name, feats in eval_sets.items() for task in plan[name] if task in TC_TASKS]

    return ExtraEval(tasks=TC_TASKS, run=run, text_tasks=("zeroshot_retrieval",), image_extra=patch_tokens)


def _score(model: DualEncoder, pool: TextConditionedPool, feats: EvalFeatures, task: str,
           cfg: RunConfig) -> dict[str, float]:
    patches_NPE = feats.image_extra
    assert patches_NPE is not None
    with encoding(model, cfg.eval.precision):
        if task == "zeroshot_classification":
            classifier_EC = zero_shot_classifier(model, feats, cfg)
            labelled_N = feats.labels_N >= 0  # a set's unclassed samples sit out zero-shot
            scores_NC = tc_scores(pool, patches_NPE[labelled_N], classifier_EC.T).cpu()
            labels_N = feats.labels_N[labelled_N]
            return classification_metrics(true_class_ranks(scores_NC, labels_N), labels_N, len(feats.classnames))
        assert feats.texts_TD is not None and feats.text_to_image_T is not None
        scores_NT = tc_scores(pool, patches_NPE, feats.texts_TD).cpu()
        return tc_retrieval_metrics(scores_NT, feats.text_to_image_T, text_ids_T=feats.text_ids_T)
