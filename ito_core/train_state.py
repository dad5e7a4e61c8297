"""What the training loop itself carries from step to step, beside what DeepSpeed checkpoints (weights, optimizer,
scheduler). A checkpoint stores it under the fixed ``client_state`` key ``train_state`` and copies it into the
checkpoint's manifest, as the plain dict ``state_dict`` returns: that dict, its keys and their order are the
on-disk format, unchanged since the loop kept its state in a dict."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken, skipped ones included: the next step's index
    skipped_steps: int = 0  # steps whose update a non-finite loss or gradient prevented (train.nonfinite=skip)
    history: list[dict[str, Any]] = field(default_factory=list)  # a logged row every train.log_every steps
    data: dict[str, int] | None = None  # the loader's position (its state_dict) at the last checkpoint

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's ``train_state``; ``data`` is left out until the first checkpoint sets it."""
        saved: dict[str, Any] = {"step": self.step, "skipped_steps": self.skipped_steps, "history": self.history}
        if self.data is not None:
            saved["data"] = self.data
        return saved

    @classmethod
    def from_state_dict(cls, saved: dict[str, Any]) -> TrainState:
        """The state a checkpoint's ``train_state`` holds; keys it lacks keep their start values."""
        unknown = sorted(set(saved) - {f.name for f in fields(cls)})
        assert not unknown, f"a checkpoint's train_state holds keys this loop does not know: {unknown}"
        return cls(**saved)
