"""Retrieval recall@k on hand-built features, and against a naive sort-and-look loop."""

import pytest
import torch
import torch.nn.functional as F

from ito_core.eval.ranking import best_match_ranks
from ito_core.eval.retrieval import retrieval_metrics


def naive_recalls(
    images_ND: torch.Tensor, texts_TD: torch.Tensor, text_to_image: list[int], k: int
) -> tuple[float, float]:
    """(image retrieval, text retrieval) recall@k by sorting every query's candidates in Python."""
    images_ND = images_ND / images_ND.norm(dim=-1, keepdim=True)
    texts_TD = texts_TD / texts_TD.norm(dim=-1, keepdim=True)
    scores = (texts_TD @ images_ND.T).tolist()
    num_texts, num_images = len(scores), len(scores[0])
    image_hits = 0
    for t in range(num_texts):
        top = sorted(range(num_images), key=lambda n: -scores[t][n])[:k]
        image_hits += text_to_image[t] in top
    text_hits = 0
    for n in range(num_images):
        top = sorted(range(num_texts), key=lambda t: -scores[t][n])[:k]
        text_hits += any(text_to_image[t] == n for t in top)
    return image_hits / num_texts, text_hits / num_images


def test_perfect_features_score_one() -> None:
    images_ND = torch.eye(4)
    text_to_image_T = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    metrics = retrieval_metrics(images_ND, 3 * images_ND[text_to_image_T], text_to_image_T, ks=(1, 5))
    assert metrics == {
        "image_retrieval_recall@1": 1.0, "text_retrieval_recall@1": 1.0,
        "image_retrieval_recall@5": 1.0, "text_retrieval_recall@5": 1.0,
    }


def test_default_keys() -> None:
    metrics = retrieval_metrics(torch.eye(3), torch.eye(3), torch.arange(3))
    assert sorted(metrics) == sorted(
        f"{kind}_retrieval_recall@{k}" for kind in ("image", "text") for k in (1, 5, 10)
    )


def test_permuted_captions() -> None:
    # Caption t describes image t but looks like image perm[t]: only the fixed points 0 and 3 are found at k=1.
    perm = torch.tensor([0, 2, 1, 3, 5, 6, 4])
    metrics = retrieval_metrics(torch.eye(7), torch.eye(7)[perm], torch.arange(7), ks=(1, 7))
    assert metrics["image_retrieval_recall@1"] == pytest.approx(2 / 7)
    assert metrics["text_retrieval_recall@1"] == pytest.approx(2 / 7)
    # Every other score is a 0-0 tie, which counts against the query until k covers all 7 candidates.
    assert metrics["image_retrieval_recall@7"] == 1.0


def test_image_query_hits_if_any_caption_is_in_top_k() -> None:
    images_ND = torch.eye(3)
    # Image 0 has a misleading caption (looks like image 1) and a good one; images 1 and 2 one good caption each.
    texts_TD = torch.tensor([[0.0, 1, 0], [1.0, 0, 0], [0.0, 1, 0], [0.0, 0, 1]])
    text_to_image_T = torch.tensor([0, 0, 1, 2])
    metrics = retrieval_metrics(images_ND, texts_TD, text_to_image_T, ks=(1, 2, 3))
    # Image 0 finds its good caption first; image 1's caption ties with image 0's misleading one: a miss at 1.
    assert metrics["text_retrieval_recall@1"] == pytest.approx(2 / 3)
    assert metrics["text_retrieval_recall@2"] == 1.0
    # The misleading caption ranks image 0 behind image 1 and level with image 2: found only at k=3.
    assert metrics["image_retrieval_recall@1"] == pytest.approx(3 / 4)
    assert metrics["image_retrieval_recall@2"] == pytest.approx(3 / 4)
    assert metrics["image_retrieval_recall@3"] == 1.0


def test_collapsed_features_score_zero() -> None:
    ones_ND = torch.ones(5, 4)
    metrics = retrieval_metrics(ones_ND, torch.ones(10, 4), torch.arange(10) // 2, ks=(1, 4))
    assert set(metrics.values()) == {0.0}


def test_nan_features_score_zero() -> None:
    nan_ND = torch.full((3, 4), float("nan"))
    assert set(retrieval_metrics(nan_ND, nan_ND, torch.arange(3), ks=(1, 2)).values()) == {0.0}


@pytest.mark.parametrize("k", [1, 3, 10])
def test_matches_naive_loop_on_random_features(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    images_ND = torch.randn(40, 8, generator=generator)
    text_to_image = [n for n in range(40) for _ in range(1 + n % 3)]  # 1 to 3 captions per image
    text_to_image_T = torch.tensor(text_to_image)
    # Captions near their image, so recall is neither 0 nor 1.
    texts_TD = images_ND[text_to_image_T] + 1.5 * torch.randn(len(text_to_image), 8, generator=generator)
    metrics = retrieval_metrics(images_ND, texts_TD, text_to_image_T, ks=(k,))
    image_recall, text_recall = naive_recalls(images_ND, texts_TD, text_to_image, k)
    assert 0 < image_recall < 1
    assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(image_recall)
    assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(text_recall)


def test_chunked_ranks_equal_unchunked() -> None:
    generator = torch.Generator().manual_seed(0)
    queries_QD, candidates_CD = torch.randn(50, 6, generator=generator), torch.randn(20, 6, generator=generator)
    ids = {"query_ids_Q": torch.arange(50) % 20, "candidates_CD": candidates_CD, "candidate_ids_C": torch.arange(20)}
    torch.testing.assert_close(
        best_match_ranks(queries_QD, chunk_size=7, **ids), best_match_ranks(queries_QD, chunk_size=4096, **ids)
    )


@pytest.mark.parametrize(
    ("text_to_image", "ks", "match"),
    [
        ([0, 0, 1], (1,), r"images \[2\] have none"),
        ([0, 1, 3], (1,), r"\[0, 3\)"),
        ([0, 1], (1,), "one entry per text"),
        ([0, 1, 2], (0, 1), "ks=.0, 1."),
    ],
)
def test_rejects_bad_inputs(text_to_image: list[int], ks: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        retrieval_metrics(torch.eye(3), torch.eye(3), torch.tensor(text_to_image), ks=ks)


def naive_tie_aware_recalls(scores: list[list[float]], captions: list[tuple[int, str]], k: int
                            ) -> tuple[float, float]:
    """(image retrieval, text retrieval) recall@k where caption text, not index, decides a match: image n is
    correct for caption t when t's text is one of n's captions. Ranks count every wrong candidate scoring at least
    the best correct one (ties against the query), by plain loops over strings."""
    num_images = len(scores[0])
    texts_of = [{text for n, text in captions if n == image} for image in range(num_images)]

    def hit(query_scores: list[float], correct: list[bool]) -> bool:
        best = max(s for s, ok in zip(query_scores, correct, strict=True) if ok)
        return sum(1 for s, ok in zip(query_scores, correct, strict=True) if not ok and s >= best) < k

    image_hits = sum(hit(scores[t], [text in texts_of[n] for n in range(num_images)])
                     for t, (_, text) in enumerate(captions))
    text_hits = sum(hit([scores[t][n] for t in range(len(captions))], [text in texts_of[n] for _, text in captions])
                    for n in range(num_images))
    return image_hits / len(captions), text_hits / num_images


@pytest.mark.parametrize("k", [1, 2, 5])
def test_tied_captions_match_a_brute_force_reference(k: int) -> None:
    generator = torch.Generator().manual_seed(10 + k)
    words = ["a red circle", "a blue square", "A  red circle", "a green star", "a pumpkin"]
    # 30 images, 1-2 captions each drawn from few texts: many images share a text or their whole caption set.
    captions = [(n, words[int(i)]) for n in range(30)
                for i in torch.randint(len(words), (1 + n % 2,), generator=generator)]
    text_to_image_T = torch.tensor([n for n, _ in captions])
    normalised = [" ".join(text.lower().split()) for _, text in captions]  # as the tokenizer sees them
    text_ids_T = torch.tensor([sorted(set(normalised)).index(text) for text in normalised])
    images_ND = torch.randn(30, 6, generator=generator)
    texts_TD = images_ND[text_to_image_T] + torch.randn(len(captions), 6, generator=generator)
    metrics = retrieval_metrics(images_ND, texts_TD, text_to_image_T, text_ids_T=text_ids_T, ks=(k,))
    scores = (F.normalize(texts_TD, dim=-1) @ F.normalize(images_ND, dim=-1).T).tolist()
    by_text = [(n, text) for (n, _), text in zip(captions, normalised, strict=True)]
    image_recall, text_recall = naive_tie_aware_recalls(scores, by_text, k)
    assert metrics[f"image_retrieval_recall@{k}"] == pytest.approx(image_recall)
    assert metrics[f"text_retrieval_recall@{k}"] == pytest.approx(text_recall)


def test_images_sharing_a_caption_set_are_both_right() -> None:
    # Images 0 and 1 look the same and share their captions (two identical shape layouts); image 2 differs.
    images_ND = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    texts_TD = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    text_to_image_T = torch.tensor([0, 1, 2])
    by_index = retrieval_metrics(images_ND, texts_TD, text_to_image_T, ks=(1,))
    by_text = retrieval_metrics(images_ND, texts_TD, text_to_image_T, text_ids_T=torch.tensor([7, 7, 3]), ks=(1,))
    assert by_index["image_retrieval_recall@1"] == pytest.approx(1 / 3)  # the tie cost both shared captions
    assert by_text == {"image_retrieval_recall@1": 1.0, "text_retrieval_recall@1": 1.0}


def test_text_ids_need_one_per_caption() -> None:
    with pytest.raises(ValueError, match="2 text ids for 3 captions"):
        retrieval_metrics(torch.eye(3), torch.eye(3), torch.arange(3), text_ids_T=torch.tensor([0, 1]))
