"""The hook for a method's own eval path beside the suite's tasks (FLAIR: text-conditioned scoring).

The suite reads and encodes each eval set once (``ito_core.eval.encode``) and hands the features to the hook, so an
extra path never reads or encodes a set again. A method declares which suite tasks it scores, whether it needs the
captions encoded for them, and any image features of its own (computed on the same pixel batches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ito_core.config import RunConfig
from ito_core.eval.encode import EvalFeatures, ImageExtra
from ito_core.models.dual_encoder import DualEncoder

# (model, {set name: its features}, cfg) -> records {"dataset", "task", "metrics"}; the suite adds the rest.
ExtraRun = Callable[[DualEncoder, dict[str, EvalFeatures], RunConfig], list[dict[str, Any]]]


@dataclass(frozen=True)
class ExtraEval:
    tasks: tuple[str, ...]  # suite tasks (CLIP_benchmark names) whose sets the path scores too
    run: ExtraRun  # called once per set that runs one of ``tasks``, right after the set is encoded
    text_tasks: tuple[str, ...] = ()  # of ``tasks``, those that need the set's captions encoded
    image_extra: ImageExtra | None = None  # features of its own from each pixel batch (EvalFeatures.image_extra)

    def wants(self, tasks: list[str]) -> bool:
        return any(task in self.tasks for task in tasks)

    def wants_texts(self, tasks: list[str]) -> bool:
        return any(task in self.text_tasks for task in tasks)
