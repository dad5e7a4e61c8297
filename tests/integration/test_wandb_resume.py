"""W&B across a SIGKILL and a resume: one W&B run id, and every step logged once, in order.

The resumed ranks replay the steps after their checkpoint; W&B already holds some of them (an online run
refuses them, offline files would keep them twice), and a SIGKILL loses the steps W&B had not flushed
(the resumed run logs those from the rows its checkpoint holds).
Checked on the offline run files themselves: W&B's ``.wandb`` record logs of both starts.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from fixtures.faults import RUN, TrainRanks, two_rank_config

from cluster.jobs import work_dir
from ito_core.storage import MANIFEST, build_store
from ito_core.tracking import offline_records, wandb_run_id

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

STEPS, CHECKPOINT_EVERY = 120, 16  # long enough for W&B to flush some steps before the kill
def offline_runs(cfg: object) -> list[Path]:
    """The offline run folders of ``RUN``, oldest first (one per start of the job)."""
    root = work_dir(cfg, RUN) / "staging" / "node-0" / "wandb" / "wandb"
    return sorted(root.glob("offline-run-*"))


def logged_rows(run_dir: Path) -> dict[int, dict]:
    """step -> logged values of one offline run (empty before W&B created its file)."""
    return {r.history.step.num: {".".join(i.nested_key) or i.key: json.loads(i.value_json) for i in r.history.item}
            for log in run_dir.glob("run-*.wandb") for r in offline_records(log)
            if r.WhichOneof("record_type") == "history"}


def logged_steps(run_dir: Path) -> list[int]:
    return list(logged_rows(run_dir))


def test_a_resumed_run_keeps_its_wandb_id_and_logs_each_step_once(
        ranks: TrainRanks, small_shards: list[str], tmp_path: Path) -> None:
    cfg = two_rank_config(tmp_path, "wandb=offline", f"train.steps={STEPS}",
                          f"train.checkpoint_every={CHECKPOINT_EVERY}")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    first = ranks.start(cfg, shards=small_shards, name="first", env=env)
    # W&B flushes its offline file every few seconds: kill once it holds some steps, as a real kill would find it
    first.wait_for(lambda: any(logged_steps(run) for run in offline_runs(cfg)), what="W&B steps on disk")
    first.kill(0)
    assert first.join(60)[0] == -signal.SIGKILL

    ranks.start(cfg, shards=small_shards, name="resumed", env=env).finish()

    runs = offline_runs(cfg)
    before = logged_steps(runs[0])  # what the killed job's W&B got to disk (the resumed one started after it)
    assert len(runs) == 2 and {r.name.rsplit("-", 1)[1] for r in runs} == {wandb_run_id(RUN)}, "one W&B run id"
    after = logged_steps(runs[1])
    assert after[0] == (before[-1] + 1 if before else 1), f"logged from after W&B's last step on disk: {after}"
    assert before + after == list(range(1, STEPS + 1)), "every step once, in order, across both starts"
    logged = {step: row for run in runs for step, row in logged_rows(run).items()}
    committed = build_store(cfg.storage).read_json(f"{RUN}/train/{MANIFEST}")["history"]
    assert {row["step"]: row["align_loss"] for row in committed} == {s: r["align_loss"] for s, r in logged.items()}, \
        "W&B holds the committed run's rows: the restored ones and the resumed ones"
