"""Linear probe on synthetic features whose answers are known: separable clusters, pure priors, the C sweep."""

import pytest
import torch

from ito_core.eval.linear_probe import fit_probe, linear_probe_metrics, probe_scores, split_indices
from ito_core.eval.ranking import true_class_ranks


def clusters(num_per_class: int, num_classes: int, *, spread: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around orthogonal class centres e_c: separable when `spread` is small."""
    generator = torch.Generator().manual_seed(0)
    labels_N = torch.arange(num_classes).repeat_interleave(num_per_class)
    features_ND = torch.eye(8)[labels_N] + spread * torch.randn(len(labels_N), 8, generator=generator)
    return features_ND, labels_N


def test_split_is_stratified_disjoint_complete_and_seeded() -> None:
    labels_N = torch.tensor([0] * 20 + [1] * 10 + [2] * 30)
    train, val, test = split_indices(labels_N, val_fraction=0.2, test_fraction=0.5, seed=3)
    assert sorted(torch.cat([train, val, test]).tolist()) == list(range(60))
    assert labels_N[test].bincount().tolist() == [10, 5, 15]
    assert labels_N[val].bincount().tolist() == [4, 2, 6]
    assert labels_N[train].bincount().tolist() == [6, 3, 9]
    again = split_indices(labels_N, val_fraction=0.2, test_fraction=0.5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip((train, val, test), again, strict=True))
    other = split_indices(labels_N, val_fraction=0.2, test_fraction=0.5, seed=4)
    assert not torch.equal(test, other[2])


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.5), (0.5, 0.5), (0.2, -0.1)])
def test_split_rejects_fractions_leaving_a_part_empty(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="sum < 1"):
        split_indices(torch.zeros(10, dtype=torch.long), val_fraction=val, test_fraction=test)


def test_split_rejects_too_few_samples() -> None:
    with pytest.raises(ValueError, match="more samples"):
        split_indices(torch.tensor([0, 1]), val_fraction=0.2, test_fraction=0.5)


def test_separable_clusters_score_one() -> None:
    features_ND, labels_N = clusters(20, 6, spread=0.05)
    splits = split_indices(labels_N, val_fraction=0.25, test_fraction=0.5)
    metrics = linear_probe_metrics(features_ND, labels_N, splits=splits, c_grid=[1.0, 100.0])
    assert metrics["lp_acc1"] == metrics["lp_acc5"] == metrics["lp_mean_per_class_recall"] == 1.0
    assert metrics["lp_val_acc1"] == 1.0
    assert metrics["lp_C"] == 1.0  # both C are perfect on val: the stronger regularisation wins the tie


def test_uninformative_features_predict_the_majority_class() -> None:
    # Identical features: only the intercepts (class priors) can be learnt, so the 3:1 majority is always predicted.
    labels_N = torch.tensor([0] * 24 + [1] * 8)
    splits = split_indices(labels_N, val_fraction=0.25, test_fraction=0.5)
    metrics = linear_probe_metrics(torch.ones(32, 4), labels_N, splits=splits, c_grid=[1.0])
    assert metrics["lp_acc1"] == pytest.approx(0.75)
    assert metrics["lp_mean_per_class_recall"] == pytest.approx(0.5)
    assert metrics["lp_acc5"] == 1.0  # top-min(5, C) with C = 2


def test_sweep_picks_the_c_that_is_best_on_val() -> None:
    # A 3:1 imbalanced pair of separable clusters. C = 1e-9 shrinks the weights to ~0, leaving only the (unpenalised)
    # intercepts: the majority class is always predicted (10 of the 14 val samples). C = 10 separates the clusters.
    features_ND, labels_N = clusters(40, 2, spread=0.05)
    keep = torch.cat([torch.arange(40), torch.arange(40, 80)[::3]])  # 40 of class 0, 14 of class 1
    features_ND, labels_N = features_ND[keep], labels_N[keep]
    splits = split_indices(labels_N, val_fraction=0.25, test_fraction=0.5)
    weak = linear_probe_metrics(features_ND, labels_N, splits=splits, c_grid=[1e-9])
    assert weak["lp_val_acc1"] == pytest.approx(10 / 14) and weak["lp_mean_per_class_recall"] == 0.5
    swept = linear_probe_metrics(features_ND, labels_N, splits=splits, c_grid=[1e-9, 10.0])
    assert swept["lp_C"] == 10.0 and swept["lp_val_acc1"] == 1.0 and swept["lp_acc1"] == 1.0


def test_binary_and_unseen_classes_are_scored_in_the_full_class_range() -> None:
    features_ND, labels_N = clusters(10, 2, spread=0.05)
    probe = fit_probe(features_ND, labels_N, c=10.0)
    scores_NC = probe_scores(probe, features_ND, num_classes=3)  # class 2 exists but was never seen in training
    assert scores_NC.shape == (20, 3) and torch.isinf(scores_NC[:, 2]).all()
    assert (true_class_ranks(scores_NC, labels_N) == 0).all()


def test_known_true_class_ranks() -> None:
    scores_NC = torch.tensor([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 1.0, 0.0], [float("nan"), 0.0, 0.0]])
    assert true_class_ranks(scores_NC, torch.tensor([0, 2, 1, 0])).tolist() == [0, 2, 1, 2]


@pytest.mark.parametrize(("labels", "c_grid", "match"), [
    ([0, 1, -1, 0, 1, 0, 1, 0, 1, 0], [1.0], "unlabelled"),
    ([0, 1] * 5, [], "positive C"),
    ([0, 1] * 5, [0.0], "positive C"),
])
def test_rejects_bad_inputs(labels: list[int], c_grid: list[float], match: str) -> None:
    labels_N = torch.tensor(labels)
    splits = (torch.arange(4), torch.arange(4, 6), torch.arange(6, 10))
    with pytest.raises(ValueError, match=match):
        linear_probe_metrics(torch.randn(10, 3), labels_N, splits=splits, c_grid=c_grid)


def test_single_class_training_split_is_refused() -> None:
    with pytest.raises(ValueError, match="single class"):
        fit_probe(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), c=1.0)


def test_warm_start_reaches_the_cold_start_optimum() -> None:
    features_ND, labels_N = clusters(15, 3, spread=0.5)
    cold = fit_probe(features_ND, labels_N, c=10.0)
    warm = fit_probe(features_ND, labels_N, c=10.0, warm_start=fit_probe(features_ND, labels_N, c=0.1))
    assert warm.C == 10.0
    x = torch.nn.functional.normalize(features_ND, dim=-1).double().numpy()  # the probe sees unit features
    # L-BFGS stops at a gradient tolerance, so compare the fitted functions, not the exact weights.
    assert abs(warm.predict_proba(x) - cold.predict_proba(x)).max() < 5e-3
    assert (warm.predict(x) == cold.predict(x)).all()
