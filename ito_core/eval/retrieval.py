"""Image-text retrieval recall@k with CLIP_benchmark's metric names; an image may have several captions.

Shape legend: N = images, T = texts (captions), D = embedding dim.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ito_core.eval.ranking import best_match_ranks


def retrieval_metrics(
    image_features_ND: torch.Tensor,
    text_features_TD: torch.Tensor,
    text_to_image_T: torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """`image_retrieval_recall@k`: a caption finds its image in the top k. `text_retrieval_recall@k`: an
    image finds any of its captions in the top k. `text_to_image_T[t]` is the image index of caption t.
    Ties count as misses."""
    num_images = len(image_features_ND)
    text_to_image_T = text_to_image_T.to(image_features_ND.device)
    _check_captions(num_images, len(text_features_TD), text_to_image_T)
    if any(k < 1 for k in ks):
        raise ValueError(f"retrieval ks={tuple(ks)}; every k must be >= 1")
    image_ids_N = torch.arange(num_images, device=text_to_image_T.device)
    images_ND = F.normalize(image_features_ND.float(), dim=-1)
    texts_TD = F.normalize(text_features_TD.float(), dim=-1)
    text_query_ranks_T = best_match_ranks(
        texts_TD, query_ids_Q=text_to_image_T, candidates_CD=images_ND, candidate_ids_C=image_ids_N
    )
    image_query_ranks_N = best_match_ranks(
        images_ND, query_ids_Q=image_ids_N, candidates_CD=texts_TD, candidate_ids_C=text_to_image_T
    )
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = (text_query_ranks_T < k).float().mean().item()
        metrics[f"text_retrieval_recall@{k}"] = (image_query_ranks_N < k).float().mean().item()
    return metrics


def _check_captions(num_images: int, num_texts: int, text_to_image_T: torch.Tensor) -> None:
    if num_images == 0 or num_texts == 0 or len(text_to_image_T) != num_texts:
        raise ValueError(f"got {num_images} images, {num_texts} text features and {len(text_to_image_T)} "
                         "text_to_image entries; need > 0 of each and one entry per text")
    if text_to_image_T.min() < 0 or text_to_image_T.max() >= num_images:
        raise ValueError(f"text_to_image must hold image indices in [0, {num_images})")
    captions_per_image_N = text_to_image_T.bincount(minlength=num_images)
    if (captions_per_image_N == 0).any():
        missing = (captions_per_image_N == 0).nonzero().flatten().tolist()
        raise ValueError(f"every image needs at least one caption; images {missing[:5]} have none")
