"""W&B tracking from rank 0 (online, offline, or disabled by ``wandb.mode``).

The W&B run id is derived from the run key, so a requeued or resumed job continues the same
W&B run instead of starting a new one, with nothing extra to checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ito_core.config import RunConfig, as_dict, config_hash


class Tracker:
    def __init__(self, cfg: RunConfig, *, run_key: str, rank: int, directory: Path) -> None:
        self.run = None
        if rank != 0 or cfg.wandb.mode == "disabled":
            return
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=cfg.wandb.project, mode=cfg.wandb.mode, id=config_hash(run_key),
                              name=run_key.rsplit("/", 1)[-1], group=cfg.wandb.group or None, resume="allow",
                              dir=str(directory), config=as_dict(cfg), settings=wandb.Settings(silent=True))

    def log(self, row: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
