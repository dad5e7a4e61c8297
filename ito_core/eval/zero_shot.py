"""Zero-shot classification: class embeddings from prompt templates, then CLIP_benchmark metrics.

Shape legend: N = images, C = classes, T = templates per class, P = prompts (C x T), D = embedding dim,
L = context length.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ito_core.data.tokenizer import trim_padding
from ito_core.eval.features import compute_features, eval_mode, model_device
from ito_core.eval.ranking import best_match_ranks, classification_metrics


def build_zero_shot_classifier(
    model: nn.Module,
    classnames: Sequence[str],
    templates: Sequence[str],
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    *,
    batch_size: int = 256,
) -> torch.Tensor:
    """Classifier weights [D, C]: per class, the mean of its normalised prompt embeddings, renormalised.

    `model.encode_text(tokens_BL)` embeds prompts; `batch_size` prompts go through it at a time.
    """
    if not classnames or not templates:
        raise ValueError(f"need class names and templates; got {len(classnames)} and {len(templates)}")
    if bad := [t for t in templates if "{}" not in t]:
        raise ValueError(f"zero-shot templates need a '{{}}' for the class name; these have none: {bad[:3]}")
    prompts = [template.format(name) for name in classnames for template in templates]
    tokens_PL = tokenizer(prompts)
    with eval_mode(model):
        batches = [trim_padding(b) for b in tokens_PL.split(batch_size)]
        prompts_PD = compute_features(model.encode_text, batches, device=model_device(model), desc="class prompts")
    prompts_CTD = prompts_PD.view(len(classnames), len(templates), -1)
    return F.normalize(prompts_CTD.mean(dim=1), dim=-1).T


def zero_shot_metrics(
    image_features_ND: torch.Tensor, labels_N: torch.Tensor, classifier_DC: torch.Tensor
) -> dict[str, float]:
    """CLIP_benchmark's zero-shot metrics: `acc1`, `acc5` (top-min(5, C)) and `mean_per_class_recall`
    (top-1 recall averaged over the classes present in `labels_N`). Ties count as misses."""
    num_classes = classifier_DC.shape[1]
    labels_N = labels_N.to(image_features_ND.device)
    if len(labels_N) == 0 or len(labels_N) != len(image_features_ND):
        raise ValueError(f"got {len(image_features_ND)} image features and {len(labels_N)} labels; need as many, > 0")
    if labels_N.min() < 0 or labels_N.max() >= num_classes:
        raise ValueError(f"labels must be class indices in [0, {num_classes}); got {labels_N.min()}..{labels_N.max()}")
    # Only images are normalised: the classifier's column norms are part of the classifier.
    ranks_N = best_match_ranks(
        F.normalize(image_features_ND.float(), dim=-1),
        query_ids_Q=labels_N,
        candidates_CD=classifier_DC.T.float(),
        candidate_ids_C=torch.arange(num_classes, device=labels_N.device),
    )
    return classification_metrics(ranks_N, labels_N, num_classes)
