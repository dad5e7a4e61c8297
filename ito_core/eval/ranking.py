"""Rank of each query's best match among candidates, shared by zero-shot accuracy and retrieval recall.

Shape legend: Q = queries, C = candidates (classes, images or texts), D = embedding dim, q = a chunk of queries.
"""

import torch


def best_match_ranks(
    queries_QD: torch.Tensor,
    *,
    query_ids_Q: torch.Tensor,
    candidates_CD: torch.Tensor,
    candidate_ids_C: torch.Tensor,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """For each query, how many non-matching candidates score at least as high as its best matching one.

    Scores are dot products; a candidate matches a query when their ids are equal. A query is a hit at k
    when its rank is < k. Ties count against the query, so a collapsed model (all scores equal) gets 0
    rather than 1; without ties this is CLIP_benchmark's top-k. NaN scores count as the worst score.
    Queries go in chunks to bound the [q, C] score matrix.
    """
    ranks_Q = []
    for start in range(0, len(queries_QD), chunk_size):
        scores_qC = queries_QD[start : start + chunk_size] @ candidates_CD.T
        scores_qC = scores_qC.masked_fill(scores_qC.isnan(), float("-inf"))
        match_qC = query_ids_Q[start : start + chunk_size, None] == candidate_ids_C[None, :]
        best_match_q = scores_qC.masked_fill(~match_qC, float("-inf")).amax(dim=1)
        ranks_Q.append(((scores_qC >= best_match_q[:, None]) & ~match_qC).sum(dim=1))
    return torch.cat(ranks_Q)
