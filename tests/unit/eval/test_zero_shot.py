"""Zero-shot classifier and metrics on hand-built features whose answers are known."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ito_core.eval.templates import OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES
from ito_core.eval.zero_shot import build_zero_shot_classifier, zero_shot_metrics


def test_perfect_features_score_one() -> None:
    labels_N = torch.tensor([0, 1, 2, 3, 4, 5, 0, 3])
    metrics = zero_shot_metrics(torch.eye(6)[labels_N], labels_N, torch.eye(6))
    assert metrics == {"acc1": 1.0, "acc5": 1.0, "mean_per_class_recall": 1.0}


def test_known_ranks() -> None:
    # Identity classifier: image rows are the logits (normalising a row keeps its order).
    logits_NC = torch.tensor([
        [9.0, 1, 2, 3, 4, 5],  # label 0, rank 0
        [1.0, 2, 3, 4, 5, 6],  # label 0, rank 5
        [0.0, 9, 1, 1, 1, 1],  # label 1, rank 0
        [5.0, 4, 3, 1, 2, 0],  # label 2, rank 2
    ])
    metrics = zero_shot_metrics(logits_NC, torch.tensor([0, 0, 1, 2]), torch.eye(6))
    # mean_per_class_recall averages classes 0 (1/2), 1 (1) and 2 (0); absent classes 3-5 are left out.
    assert metrics == pytest.approx({"acc1": 0.5, "acc5": 0.75, "mean_per_class_recall": 0.5})


def test_mean_per_class_recall_weighs_classes_not_images() -> None:
    labels_N = torch.tensor([0, 0, 0, 1])
    predicted_N = torch.tensor([0, 0, 0, 0])  # the big class is always right, the small one never
    metrics = zero_shot_metrics(torch.eye(2)[predicted_N], labels_N, torch.eye(2))
    assert metrics["acc1"] == 0.75
    assert metrics["mean_per_class_recall"] == 0.5


def test_ties_count_as_misses() -> None:
    labels_N = torch.tensor([0, 1, 2, 3, 4, 5])
    collapsed = zero_shot_metrics(torch.ones(6, 6), labels_N, torch.eye(6))
    assert collapsed == {"acc1": 0.0, "acc5": 0.0, "mean_per_class_recall": 0.0}
    tied_at_top_1C = torch.tensor([[1.0, 1.0, 0, 0, 0, 0]])  # true class 0 tied with class 1: rank 1
    assert zero_shot_metrics(tied_at_top_1C, torch.tensor([0]), torch.eye(6))["acc1"] == 0.0
    assert zero_shot_metrics(tied_at_top_1C, torch.tensor([0]), torch.eye(6))["acc5"] == 1.0


def test_acc5_is_top_num_classes_below_five() -> None:
    logits_NC = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    metrics = zero_shot_metrics(logits_NC, torch.tensor([2, 1]), torch.eye(3))
    assert metrics["acc1"] == 0.0
    assert metrics["acc5"] == 1.0


def test_classifier_column_norms_matter_image_norms_do_not() -> None:
    image_features_ND = torch.tensor([[1.0, 0.9], [100.0, 90.0]])  # same direction, any norm
    classifier_DC = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # class 1 wins only because its column is longer
    metrics = zero_shot_metrics(image_features_ND, torch.tensor([1, 1]), classifier_DC)
    assert metrics["acc1"] == 1.0


def test_nan_features_score_zero() -> None:
    metrics = zero_shot_metrics(torch.full((3, 6), float("nan")), torch.tensor([0, 1, 2]), torch.eye(6))
    assert metrics == {"acc1": 0.0, "acc5": 0.0, "mean_per_class_recall": 0.0}


@pytest.mark.parametrize(
    ("labels", "match"), [([0, 4], r"\[0, 4\)"), ([-1, 0], r"\[0, 4\)"), ([0], "as many"), ([], "as many")]
)
def test_rejects_bad_labels(labels: list[int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        zero_shot_metrics(torch.eye(4)[:2], torch.tensor(labels, dtype=torch.long), torch.eye(4))


class PromptTable(nn.Module):
    """Fake text tower: token row [i, 0] -> fixed, unnormalised feature i; records the mode it ran in."""

    def __init__(self, features_PD: torch.Tensor) -> None:
        super().__init__()
        self.features_PD = nn.Parameter(features_PD)
        self.seen_training: list[bool] = []
        self.seen_grad: list[bool] = []

    def encode_text(self, tokens_BL: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        self.seen_grad.append(torch.is_grad_enabled())
        return self.features_PD[tokens_BL[:, 0]]


class IndexTokenizer:
    """Fake tokenizer: each prompt becomes its index in a fixed prompt list."""

    def __init__(self, prompts: list[str]) -> None:
        self.index = {prompt: i for i, prompt in enumerate(prompts)}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[self.index[text], 0] for text in texts])


def test_classifier_is_renormalised_mean_of_normalised_prompts() -> None:
    classnames, templates = ["cat", "dog", "car"], ["a {}.", "the {}!"]
    prompts = [t.format(c) for c in classnames for t in templates]
    features_PD = torch.randn(len(prompts), 5, generator=torch.Generator().manual_seed(0)) * 7
    model = PromptTable(features_PD).train()
    classifier_DC = build_zero_shot_classifier(model, classnames, templates, IndexTokenizer(prompts), batch_size=4)

    unit_PD = F.normalize(features_PD, dim=-1)
    for c in range(3):
        mean_D = (unit_PD[2 * c] + unit_PD[2 * c + 1]) / 2
        torch.testing.assert_close(classifier_DC[:, c], mean_D / mean_D.norm())
    assert classifier_DC.shape == (5, 3) and not classifier_DC.requires_grad
    assert model.seen_training == [False, False] and model.seen_grad == [False, False]  # 6 prompts, 4 per batch
    assert model.training  # mode restored


def test_classifier_does_not_depend_on_batch_size() -> None:
    prompts = [t.format(c) for c in ["a", "b", "c", "d"] for t in SIMPLE_TEMPLATES]
    model = PromptTable(torch.randn(len(prompts), 8, generator=torch.Generator().manual_seed(1)))
    args = (model, ["a", "b", "c", "d"], SIMPLE_TEMPLATES, IndexTokenizer(prompts))
    torch.testing.assert_close(build_zero_shot_classifier(*args, batch_size=1), build_zero_shot_classifier(*args))


def test_rejects_templates_without_placeholder() -> None:
    model = PromptTable(torch.eye(2))
    with pytest.raises(ValueError, match="a photo"):
        build_zero_shot_classifier(model, ["cat"], ["a {}.", "a photo"], IndexTokenizer([]))


def test_template_sets() -> None:
    assert len(OPENAI_IMAGENET_TEMPLATES) == 80 and len(set(OPENAI_IMAGENET_TEMPLATES)) == 80
    for template in OPENAI_IMAGENET_TEMPLATES + SIMPLE_TEMPLATES:
        assert template.count("{}") == 1 and template.count("{") == 1, template
    assert set(SIMPLE_TEMPLATES) <= set(OPENAI_IMAGENET_TEMPLATES)
