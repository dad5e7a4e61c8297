"""Modality-gap metrics on hand-built embeddings with known values, and against a naive pair loop."""

import itertools
import math

import pytest
import torch

from ito_core.eval.modality_gap import alignment, modality_gap_metrics, uniformity


def test_two_separate_points_have_the_largest_gap_a_right_angle_allows() -> None:
    # Every image at e1, every caption at e2 (unnormalised: scale must not matter).
    images_ND = torch.tensor([[3.0, 0, 0]]).repeat(4, 1)
    texts_TD = torch.tensor([[0.0, 0.5, 0]]).repeat(6, 1)
    metrics = modality_gap_metrics(images_ND, texts_TD, torch.tensor([0, 0, 1, 2, 3, 3]))
    assert metrics == pytest.approx({
        "centroid_distance": math.sqrt(2), "alignment": 2.0, "uniformity_image": 0.0, "uniformity_text": 0.0,
        "matched_pair_cosine": 0.0, "random_pair_cosine": 0.0})


def test_perfectly_aligned_orthonormal_embeddings() -> None:
    # Caption t is exactly its image e_t: no gap, perfect alignment; all distinct pairs at squared distance 2.
    metrics = modality_gap_metrics(torch.eye(5), 2 * torch.eye(5), torch.arange(5))
    assert metrics == pytest.approx({
        "centroid_distance": 0.0, "alignment": 0.0, "uniformity_image": -4.0, "uniformity_text": -4.0,
        "matched_pair_cosine": 1.0, "random_pair_cosine": 0.0}, abs=1e-12)


def test_antipodal_captions() -> None:
    images_ND = torch.tensor([[1.0, 0], [0, 1.0]])
    metrics = modality_gap_metrics(images_ND, -images_ND, torch.tensor([0, 1]))
    assert metrics["alignment"] == pytest.approx(4.0)
    assert metrics["matched_pair_cosine"] == pytest.approx(-1.0)
    assert metrics["random_pair_cosine"] == pytest.approx(0.0)
    assert metrics["centroid_distance"] == pytest.approx(math.sqrt(2))  # centroids (.5, .5) and (-.5, -.5)
    assert metrics["uniformity_image"] == pytest.approx(-4.0)  # one pair at squared distance 2


def test_matches_naive_loops_on_random_embeddings() -> None:
    generator = torch.Generator().manual_seed(0)
    images_ND = torch.nn.functional.normalize(torch.randn(7, 4, generator=generator), dim=-1)
    text_to_image = [0, 0, 1, 2, 3, 3, 3, 4, 5, 6]
    texts_TD = torch.nn.functional.normalize(images_ND[text_to_image] + torch.randn(10, 4, generator=generator), dim=-1)
    metrics = modality_gap_metrics(images_ND, texts_TD, torch.tensor(text_to_image))

    random_pairs = [(i, t) for i in range(7) for t in range(10) if text_to_image[t] != i]
    assert metrics["random_pair_cosine"] == pytest.approx(
        sum(float(images_ND[i] @ texts_TD[t]) for i, t in random_pairs) / len(random_pairs))
    assert metrics["matched_pair_cosine"] == pytest.approx(
        sum(float(images_ND[i] @ texts_TD[t]) for t, i in enumerate(text_to_image)) / 10)
    pairs = list(itertools.combinations(range(7), 2))
    naive_uniformity = math.log(sum(math.exp(-2 * float((images_ND[i] - images_ND[j]).square().sum()))
                                    for i, j in pairs) / len(pairs))
    assert metrics["uniformity_image"] == pytest.approx(naive_uniformity)
    assert metrics["centroid_distance"] == pytest.approx(float((images_ND.mean(0) - texts_TD.mean(0)).norm()))


def test_uniformity_chunks_equal_one_pass() -> None:
    x_ND = torch.nn.functional.normalize(torch.randn(50, 3, generator=torch.Generator().manual_seed(1)), dim=-1)
    assert uniformity(x_ND, chunk_size=7) == pytest.approx(uniformity(x_ND))
    assert uniformity(x_ND) == pytest.approx(float(torch.pdist(x_ND).square().mul(-2).exp().mean().log()))


def test_alignment_exponent() -> None:
    assert alignment(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 2.0, 0]]), alpha=1) == pytest.approx(1.5)


@pytest.mark.parametrize(("num_images", "text_to_image", "match"), [
    (1, [0, 0], ">= 2 images"),
    (3, [0], ">= 2 texts"),
    (3, [0, 3], r"\[0, 3\)"),
])
def test_rejects_bad_inputs(num_images: int, text_to_image: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        modality_gap_metrics(torch.eye(3)[:num_images], torch.eye(3)[: len(text_to_image)], torch.tensor(text_to_image))
