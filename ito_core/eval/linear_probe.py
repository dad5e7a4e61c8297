"""Linear probe: L2-regularised logistic regression on frozen image features (CLIP, Radford et al. 2021, App. A.3).

The regularisation is swept on a validation split (scikit-learn's ``C`` = inverse strength); the best ``C`` is
refit on train + val and scored on the test split. Metric names follow CLIP_benchmark's linear probe
(``lp_acc1``, ``lp_acc5``, ``lp_mean_per_class_recall``), so they never collide with zero-shot ``acc1``.

Shape legend: N = samples, D = feature dim, C = classes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

from ito_core.eval.ranking import classification_metrics, true_class_ranks

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)


def split_indices(
    labels_N: torch.Tensor, *, val_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified (train, val, test) sample indices: per class a seeded shuffle, cut by the two fractions
    (of the whole set, rounded per class); each part sorted."""
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction}, test_fraction={test_fraction}; need both > 0 and a sum < 1 "
                         "so that train, val and test all get samples")
    generator = torch.Generator().manual_seed(seed)
    train, val, test = [], [], []
    for label in labels_N.unique().tolist():
        index = (labels_N == label).nonzero().flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        num_test, num_val = round(len(index) * test_fraction), round(len(index) * val_fraction)
        test.append(index[:num_test])
        val.append(index[num_test : num_test + num_val])
        train.append(index[num_test + num_val :])
    parts = tuple(torch.cat(part).sort().values for part in (train, val, test))
    if any(len(part) == 0 for part in parts):
        raise ValueError(f"split of {len(labels_N)} samples gave {[len(p) for p in parts]} train/val/test samples; "
                         "use more samples or larger fractions")
    return parts  # type: ignore[return-value]


def fit_probe(
    features_ND: torch.Tensor,
    labels_N: torch.Tensor,
    *,
    c: float,
    max_iter: int = 1000,
    warm_start: LogisticRegression | None = None,
) -> LogisticRegression:
    """Multinomial logistic regression (L-BFGS) on L2-normalised features. ``warm_start``: a probe fit on the
    same samples with another C, refit from its solution (same optimum, far fewer iterations along a C sweep)."""
    if labels_N.unique().numel() < 2:
        raise ValueError(f"the probe's training split has a single class ({labels_N[0].item()}); it needs >= 2")
    # Imported here: scikit-learn (+ SciPy) costs ~1 s CPU; the flow process imports this module without evaluating.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    probe = warm_start.set_params(C=c) if warm_start is not None else LogisticRegression(C=c, max_iter=max_iter,
                                                                                           warm_start=True)
    # One BLAS thread: numpy's OpenBLAS threads fighting torch's spinning OpenMP threads made this 100x slower.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(limits=1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(_numpy(features_ND), labels_N.cpu().numpy())
    if caught:
        log.info("linear probe C=%g stopped at max_iter=%d before converging", c, max_iter)
    return probe


def probe_scores(probe: LogisticRegression, features_ND: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Decision scores [N, num_classes]; classes the probe never saw score -inf (always ranked last)."""
    decision = probe.decision_function(_numpy(features_ND))
    if decision.ndim == 1:  # binary: one score, positive for classes_[1]
        decision = np.stack([np.zeros_like(decision), decision], axis=1)
    scores_NC = torch.full((len(features_ND), num_classes), float("-inf"), dtype=torch.float64)
    scores_NC[:, torch.as_tensor(probe.classes_)] = torch.from_numpy(decision).double()
    return scores_NC


def linear_probe_metrics(
    features_ND: torch.Tensor,
    labels_N: torch.Tensor,
    *,
    splits: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    c_grid: Sequence[float],
    max_iter: int = 1000,
) -> dict[str, float]:
    """Sweep ``c_grid`` on val (ties go to the smallest C, the strongest regularisation), refit on train + val,
    score on test. Returns ``lp_acc1``, ``lp_acc5``, ``lp_mean_per_class_recall``, the chosen ``lp_C`` and its
    validation top-1 ``lp_val_acc1``. Ties between classes count as misses, as in the zero-shot metrics."""
    if not c_grid or min(c_grid) <= 0:
        raise ValueError(f"c_grid={list(c_grid)}; give one or more positive C values")
    if len(labels_N) != len(features_ND) or labels_N.numel() == 0 or labels_N.min() < 0:
        raise ValueError(f"got {len(features_ND)} features and {len(labels_N)} labels; the linear probe needs one "
                         "class label >= 0 per sample (is this eval set unlabelled?)")
    features_ND, labels_N = features_ND.cpu(), labels_N.cpu()
    train, val, test = (part.cpu() for part in splits)
    num_classes = int(labels_N.max()) + 1
    val_acc1, probe = {}, None
    for c in sorted(c_grid):  # weakest regularisation last, each fit warm-started from the previous solution
        probe = fit_probe(features_ND[train], labels_N[train], c=c, max_iter=max_iter, warm_start=probe)
        ranks = true_class_ranks(probe_scores(probe, features_ND[val], num_classes), labels_N[val])
        val_acc1[c] = (ranks == 0).double().mean().item()
    best_c = max(val_acc1, key=lambda c: (val_acc1[c], -c))
    fit = torch.cat([train, val])
    probe = fit_probe(features_ND[fit], labels_N[fit], c=best_c, max_iter=max_iter)
    ranks = true_class_ranks(probe_scores(probe, features_ND[test], num_classes), labels_N[test])
    metrics = {f"lp_{k}": v for k, v in classification_metrics(ranks, labels_N[test], num_classes).items()}
    return {**metrics, "lp_C": float(best_c), "lp_val_acc1": val_acc1[best_c]}


def _numpy(features_ND: torch.Tensor) -> np.ndarray:
    return F.normalize(features_ND.float(), dim=-1).cpu().numpy().astype(np.float64)
