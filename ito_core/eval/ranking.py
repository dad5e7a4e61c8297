"""Ranks of true matches among candidates, shared by zero-shot accuracy, retrieval recall and the linear probe.

Shape legend: Q = queries, C = candidates (classes, images or texts), D = embedding dim, q = a chunk of queries,
N = classified samples.
"""

from collections.abc import Callable

import torch


def best_match_ranks(
    queries_QD: torch.Tensor,
    *,
    query_ids_Q: torch.Tensor,
    candidates_CD: torch.Tensor,
    candidate_ids_C: torch.Tensor,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """``match_ranks`` where a candidate matches a query when their ids are equal."""
    return match_ranks(queries_QD, candidates_CD, chunk_size=chunk_size,
                       matches=lambda rows: query_ids_Q[rows, None] == candidate_ids_C[None, :])


def match_ranks(
    queries_QD: torch.Tensor,
    candidates_CD: torch.Tensor,
    *,
    matches: Callable[[slice], torch.Tensor],
    chunk_size: int = 4096,
) -> torch.Tensor:
    """For each query, how many non-matching candidates score at least as high as its best matching one.

    Scores are dot products; ``matches(rows)`` is the [q, C] bool matrix of which candidates match the queries
    ``rows``. A query is a hit at k when its rank is < k. Ties count against the query, so a collapsed model
    (all scores equal) gets 0 rather than 1; without ties this is CLIP_benchmark's top-k. NaN scores count as
    the worst score. Queries go in chunks to bound the [q, C] score matrix.
    """
    ranks_Q = []
    for start in range(0, len(queries_QD), chunk_size):
        rows = slice(start, start + chunk_size)
        scores_qC = queries_QD[rows] @ candidates_CD.T
        scores_qC = scores_qC.masked_fill(scores_qC.isnan(), float("-inf"))
        match_qC = matches(rows)
        best_match_q = scores_qC.masked_fill(~match_qC, float("-inf")).amax(dim=1)
        ranks_Q.append(((scores_qC >= best_match_q[:, None]) & ~match_qC).sum(dim=1))
    return torch.cat(ranks_Q)


def true_class_ranks(scores_NC: torch.Tensor, labels_N: torch.Tensor) -> torch.Tensor:
    """For each row, how many other classes score at least as high as its true class (ties count against it)."""
    scores_NC = scores_NC.masked_fill(scores_NC.isnan(), float("-inf"))
    true_N = scores_NC.gather(1, labels_N[:, None])
    other_NC = torch.ones_like(scores_NC, dtype=torch.bool).scatter_(1, labels_N[:, None], False)
    return ((scores_NC >= true_N) & other_NC).sum(dim=1)


def classification_metrics(ranks_N: torch.Tensor, labels_N: torch.Tensor, num_classes: int) -> dict[str, float]:
    """CLIP_benchmark's classification metrics from true-class ranks: `acc1`, `acc5` (top-min(5, C)) and
    `mean_per_class_recall` (top-1 recall averaged over the classes present in `labels_N`)."""
    hit1_N = (ranks_N < 1).float()
    images_per_class_C = labels_N.bincount(minlength=num_classes)
    hits_per_class_C = labels_N.bincount(weights=hit1_N, minlength=num_classes)
    present_C = images_per_class_C > 0
    return {
        "acc1": hit1_N.mean().item(),
        "acc5": (ranks_N < min(5, num_classes)).float().mean().item(),
        "mean_per_class_recall": (hits_per_class_C[present_C] / images_per_class_C[present_C]).mean().item(),
    }
