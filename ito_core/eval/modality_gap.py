"""Modality gap between image and text embeddings, on L2-normalised features.

- ``centroid_distance``: distance between the image and the text centroid (Liang et al. 2022, "Mind the Gap").
- ``alignment``: mean squared distance of matched (image, caption) pairs, Wang & Isola 2020 with alpha = 2
  (0 is perfect; 4 is antipodal).
- ``uniformity_image`` / ``uniformity_text``: log of the mean Gaussian potential exp(-2 ||u - v||^2) over all pairs
  of distinct samples of one modality, Wang & Isola 2020 with t = 2 (0 = collapsed; lower is more uniform).
- ``matched_pair_cosine`` / ``random_pair_cosine``: mean cosine of matched pairs vs of every non-matching
  (image, caption) pair, computed exactly rather than by sampling.

Shape legend: N = images, T = texts (captions), D = embedding dim, n = a chunk of samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def alignment(x_PD: torch.Tensor, y_PD: torch.Tensor, *, alpha: float = 2.0) -> float:
    """Wang & Isola's alignment: mean ||x_p - y_p||^alpha over paired rows."""
    return (x_PD - y_PD).norm(dim=1).pow(alpha).mean().item()


def uniformity(x_ND: torch.Tensor, *, t: float = 2.0, chunk_size: int = 2048) -> float:
    """Wang & Isola's uniformity: log mean exp(-t ||x_i - x_j||^2) over pairs i != j, in row chunks (logsumexp)."""
    num = len(x_ND)
    if num < 2:
        raise ValueError(f"uniformity needs >= 2 samples, got {num}")
    log_sums = []
    for start in range(0, num, chunk_size):
        chunk_nD = x_ND[start : start + chunk_size]
        sq_dist_nN = torch.cdist(chunk_nD.double(), x_ND.double()).square()
        rows = torch.arange(len(chunk_nD), device=x_ND.device)
        sq_dist_nN[rows, rows + start] = float("inf")  # drop i == j
        log_sums.append(torch.logsumexp(-t * sq_dist_nN.flatten(), dim=0))
    return (torch.logsumexp(torch.stack(log_sums), dim=0) - math.log(num * (num - 1))).item()


def modality_gap_metrics(
    image_features_ND: torch.Tensor, text_features_TD: torch.Tensor, text_to_image_T: torch.Tensor
) -> dict[str, float]:
    """All modality-gap metrics; ``text_to_image_T[t]`` is the image index of caption t (several per image allowed)."""
    num_images, num_texts = len(image_features_ND), len(text_features_TD)
    if num_images < 2 or len(text_to_image_T) != num_texts or num_texts < 2:
        raise ValueError(f"got {num_images} images, {num_texts} texts and {len(text_to_image_T)} text_to_image "
                         "entries; need >= 2 images, >= 2 texts and one entry per text")
    text_to_image_T = text_to_image_T.to(image_features_ND.device)
    if text_to_image_T.min() < 0 or text_to_image_T.max() >= num_images:
        raise ValueError(f"text_to_image must hold image indices in [0, {num_images})")
    images_ND = F.normalize(image_features_ND.double(), dim=-1)
    texts_TD = F.normalize(text_features_TD.double(), dim=-1)
    matched_TD = images_ND[text_to_image_T]
    matched_cosine_T = (matched_TD * texts_TD).sum(dim=1)
    # Sum over all N*T (image, text) pairs = (sum of images) . (sum of texts); the T matched ones are subtracted.
    all_pairs_sum = images_ND.sum(dim=0) @ texts_TD.sum(dim=0)
    return {
        "centroid_distance": (images_ND.mean(dim=0) - texts_TD.mean(dim=0)).norm().item(),
        "alignment": alignment(matched_TD, texts_TD),
        "uniformity_image": uniformity(images_ND),
        "uniformity_text": uniformity(texts_TD),
        "matched_pair_cosine": matched_cosine_T.mean().item(),
        "random_pair_cosine": ((all_pairs_sum - matched_cosine_T.sum()) / (num_images * num_texts - num_texts)).item(),
    }
