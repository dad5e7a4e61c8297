"""Encoding for evaluation: the model in eval mode without gradients, inputs in batches, outputs L2-normalised.

Shape legend: B = batch, N = all inputs, D = embedding dim.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """eval() and no_grad for the block; the model's previous train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def compute_features(
    encode_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[torch.Tensor],
    *,
    device: torch.device | str | None = None,
    desc: str = "encoding",
) -> torch.Tensor:
    """L2-normalised float32 features [N, D] of all batches, each moved to `device` first (when given).

    Call it inside `eval_mode(model)` with e.g. `model.encode_image` or `model.encode_text`. A progress bar
    named `desc` shows on a terminal (tqdm hides it when stderr is not a TTY: job logs stay clean).
    """
    progress = tqdm(batches, desc=desc, unit="batch", disable=None, leave=False)
    features_BD = [F.normalize(encode_fn(batch.to(device)).float(), dim=-1) for batch in progress]
    return torch.cat(features_BD)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights live, so that inputs can be sent there."""
    return next(model.parameters()).device
