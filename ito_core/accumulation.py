"""Gradient accumulation that is exact for contrastive losses (OpenCLIP's feature cache).

Summing the losses of micro-batches is not the loss of their union when the loss is
contrastive: every sample's negatives are the other samples of the *whole* batch. So, as
OpenCLIP's ``accum_freq`` (open_clip_train/train.py):

1. Forward every micro-batch without grad and cache its features. The loss of the whole local
   batch (against the whole gathered global batch) is computed once from the cache: it is the
   value that is logged and checked for NaN/inf before any gradient exists.
2. For each micro-batch j: forward again with grad, put its live features in place of its cached
   ones, compute the same full-batch loss and backward it. Only micro-batch j's features carry a
   gradient, so the sum over j of these gradients is the full-batch gradient.

One difference from OpenCLIP: there, every micro-batch loss uses the live logit scale, so its
gradient is counted ``accum`` times. Here each micro-batch passes on 1/accum of the scale's (and
SigLIP bias') gradient, so the sum is the full-batch gradient for them too.

DeepSpeed drives it: ``gradient_accumulation_steps = accum``; each micro-batch calls
``engine.backward(loss, scale_wrt_gas=False)`` (its loss is the full-batch loss, not a 1/accum
share) and ``engine.step()``, which reduces gradients and updates weights at the accumulation
boundary only. ``accum = 1`` is the plain forward/backward, with no cache and no extra pass.

Random draws inside the model (``ito.patch_dropout``'s patch choice) must be the same in both passes, else step 2
would put live features of other patches in place of cached ones: each micro-batch's grad pass starts from the
generator state its no-grad pass started from (a model that draws nothing is unaffected).

Cost for ``accum > 1``: one extra forward per sample (without stored activations), and the
cached features of the local batch (B x (M + N + K) x D floats).

Shape legend: B local batch, b micro batch, M image views, N captions, C/H/W pixels, L tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Outputs = dict[str, Tensor]


def split_gradient(value: Tensor, parts: int) -> Tensor:
    """``value`` in the forward pass; ``1 / parts`` of the incoming gradient in the backward pass."""
    return value.detach() + (value - value.detach()) / parts


class GradientAccumulation:
    """One optimizer step over ``steps`` micro-batches: :meth:`forward` then :meth:`backward`.

    ``engine`` is the DeepSpeed engine (``engine(images, tokens)`` returns the model outputs;
    ``backward``, ``step``, ``skipped_steps``); ``objective`` maps model outputs to a dict of
    losses with the total under ``"loss"``. Outputs with a batch dimension are concatenated along it;
    0-dim outputs (logit scale and bias) are shared by the whole batch.
    """

    def __init__(self, engine: Any, objective: Callable[[Outputs], Outputs], *, steps: int) -> None:
        assert steps >= 1, steps
        self.engine, self.objective, self.steps = engine, objective, steps
        self._loss: Tensor | None = None  # steps == 1: the live loss, backward pending
        self._micro: list[tuple[Tensor, Tensor]] = []
        self._cache: dict[str, list[Tensor]] = {}
        self._rng: list[RngState] = []  # the generator state before each micro-batch's no-grad pass

    def forward(self, images_BMCHW: Tensor, tokens_BNL: Tensor) -> Outputs:
        """The losses of the whole local batch; :meth:`backward` must follow unless the step is skipped."""
        if self.steps == 1:
            losses = self.objective(self.engine(images_BMCHW, tokens_BNL))
            self._loss = losses["loss"]
            return losses
        self._micro = list(zip(images_BMCHW.chunk(self.steps), tokens_BNL.chunk(self.steps), strict=True))
        with torch.no_grad():
            outs = []
            for images_bMCHW, tokens_bNL in self._micro:
                self._rng.append(rng_state(images_bMCHW.device))
                outs.append(self.engine(images_bMCHW, tokens_bNL))
            self._cache = {key: [out[key] for out in outs] for key, value in outs[0].items() if value.dim() > 0}
            return self.objective({**outs[0], **{key: torch.cat(parts) for key, parts in self._cache.items()}})

    def backward(self) -> bool:
        """Backward every micro-batch into the engine; the last ``engine.step()`` updates the weights.

        Return whether it did: DeepSpeed skips the update when the gradients are not finite (ZeRO
        optimizers and fp16's loss scaler check them) and counts it in ``engine.skipped_steps``."""
        skipped_before = self.engine.skipped_steps
        if self.steps == 1:
            assert self._loss is not None, "forward() first"
            self.engine.backward(self._loss, scale_wrt_gas=False)
            self.engine.step()
            self._loss = None
            return self.engine.skipped_steps == skipped_before
        assert self._micro, "forward() first"
        for j, (images_bMCHW, tokens_bNL) in enumerate(self._micro):
            set_rng_state(self._rng[j], images_bMCHW.device)
            out = self.engine(images_bMCHW, tokens_bNL)
            for key, value in out.items():
                if key in self._cache:  # micro-batch j live, the others from the cache
                    parts = self._cache[key]
                    out[key] = torch.cat([*parts[:j], value, *parts[j + 1:]])
                else:  # shared scalars: each micro-batch contributes 1/steps of their gradient
                    out[key] = split_gradient(value, self.steps)
            self.engine.backward(self.objective(out)["loss"], scale_wrt_gas=False)
            self.engine.step()
        self._micro, self._cache, self._rng = [], {}, []
        return self.engine.skipped_steps == skipped_before

    def skip(self) -> None:
        """Drop the pending step (non-finite loss): no backward, no update."""
        self._loss, self._micro, self._cache, self._rng = None, [], {}, []


RngState = tuple[Tensor, Tensor | None]


def rng_state(device: torch.device) -> RngState:
    """torch's CPU generator state and, for a CUDA device, that device's (where the model's draws come from)."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def set_rng_state(state: RngState, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
