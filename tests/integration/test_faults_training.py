"""Training killed and resumed on 2 gloo ranks (ZeRO-2, CPU, local store): nothing is lost.

- SIGKILL at ten seeded-random steps (printed), resumed each time: the final weights and every
  logged loss are bitwise the uninterrupted run's, and the rank that was not killed fails fast;
- killed inside DeepSpeed's save (some shard files written) and between the save and our
  manifest commit: the previous committed checkpoint is resumed, the partial tag never, and the
  partial tag is replaced by the resumed run's own commit;
- disk full while saving: a clear ENOSPC error naming the path and the fix, nothing committed,
  the previous checkpoint still loads;
- a shard listed in the prep manifest but gone from disk: the run fails naming it and the fix.

Ranks run as forks of a preloaded forkserver (tests/fixtures/faults.py): ~2 s per restart.
"""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path

import pytest
import torch
from fixtures.faults import (
    CKPTS,
    REFERENCE,
    Fault,
    TrainRanks,
    assert_bitwise,
    checkpoint_weights,
    logged_losses,
    two_rank_config,
)

from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig
from ito_core.data import order
from ito_core.storage import MANIFEST, LocalStore

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(600)]

CHAIN_STEPS, CHAIN_EVERY, CHAIN_SEED = 48, 3, 20261123
CHAIN_SLACK = 8  # steps left after the last kill point: a kill issued late (a busy machine) still lands
DS_SAVE = "deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine.TorchCheckpointEngine.save"


def resumed_line(store: LocalStore, tag: str | None) -> str:
    return f"resumed from {store.url(f'{CKPTS}/{tag}')}\n" if tag else "resumed from"


def test_ten_sigkills_at_random_steps_resume_bitwise(ranks: TrainRanks, small_shards: list[str],
                                                     tmp_path: Path) -> None:
    chain = (f"train.steps={CHAIN_STEPS}", f"train.checkpoint_every={CHAIN_EVERY}")
    reference = two_rank_config(tmp_path / "reference", *chain)
    ranks.start(reference, shards=small_shards, name="reference").finish()

    rng = random.Random(CHAIN_SEED)
    kill_after = sorted(rng.sample(range(2, CHAIN_STEPS - CHAIN_SLACK), 10))
    print(f"seed {CHAIN_SEED}: SIGKILL after steps {kill_after}")
    cfg = two_rank_config(tmp_path / "killed", *chain)
    store, newest = LocalStore(cfg.storage.root), None
    for i, step in enumerate(kill_after):
        attempt = ranks.start(cfg, shards=small_shards, name=f"attempt{i}")
        attempt.wait_for_text(f"step {step}/{CHAIN_STEPS} ")
        victim = rng.randrange(2)
        attempt.kill(victim)
        codes = attempt.join(60)
        log = attempt.log(0)
        assert codes != [0, 0], f"attempt {i} finished before the kill after step {step} landed"
        assert codes[victim] == -signal.SIGKILL
        assert codes[1 - victim] not in (None, 0), f"rank {1 - victim} did not fail fast: {codes}"
        assert (resumed_line(store, newest) in log) == (newest is not None), log[-2000:]
        tags = committed_tags(store, CKPTS)
        partial = sorted(set(store.list_dirs(CKPTS)) - set(tags))
        print(f"kill {i}: rank {victim} after step {step}; resumed from {newest}; committed {tags[-1:]}, "
              f"partial {partial}")
        assert all(t > tags[-1] for t in partial) if tags else True, "partial tags older than a commit are pruned"
        newest = tags[-1] if tags else None

    final = ranks.start(cfg, shards=small_shards, name="final")
    final.finish()

    assert resumed_line(store, newest) in final.log()
    assert_bitwise(checkpoint_weights(reference, tag_for(CHAIN_STEPS), tmp_path),
                   checkpoint_weights(cfg, tag_for(CHAIN_STEPS), tmp_path))
    assert logged_losses(cfg) == logged_losses(reference), "every logged loss, lr and logit scale is bitwise the same"
    assert store.list_dirs(CKPTS) == committed_tags(store, CKPTS) == [tag_for(45), tag_for(48)], "no partial left"


def test_killed_inside_a_checkpoint_save_resumes_from_the_previous_commit(
        ranks: TrainRanks, small_shards: list[str], reference_run: RunConfig, tmp_path: Path) -> None:
    cfg = two_rank_config(tmp_path, *REFERENCE)
    store, ckpts = LocalStore(cfg.storage.root), Path(cfg.storage.root) / CKPTS

    # 1. Rank 0 dies in DeepSpeed's save of step 4, after its model file, before its optimizer shard.
    mid_save = Fault(DS_SAVE, match=tag_for(4), nth=2)
    codes = ranks.start(cfg, shards=small_shards, name="mid-save", fault=mid_save).join(120)
    assert codes[0] == -signal.SIGKILL and codes[1] != 0
    assert committed_tags(store, CKPTS) == [tag_for(2)]
    partial = {p.name for p in (ckpts / tag_for(4)).iterdir()}
    assert "mp_rank_00_model_states.pt" in partial and MANIFEST not in partial
    assert "zero_pp_rank_0_mp_rank_00_optim_states.pt" not in partial

    # 2. Rank 0 dies after every shard of step 6 is on disk (the save's barrier passed), before the commit.
    second = ranks.start(cfg, shards=small_shards, name="before-commit",
                         fault=Fault("ito_core.checkpoint.commit", match=tag_for(6)))
    codes = second.join(120)
    assert codes[0] == -signal.SIGKILL and codes[1] != 0
    assert resumed_line(store, tag_for(2)) in second.log(), "the partial step 4 was not chosen"
    assert committed_tags(store, CKPTS) == [tag_for(2), tag_for(4)], "step 4 saved and committed again"
    assert len(list((ckpts / tag_for(6)).glob("*.pt"))) == 3 and not (ckpts / tag_for(6) / MANIFEST).exists()

    # 3. The run ends: resumed from step 4, never from the complete-looking but uncommitted step 6.
    last = ranks.start(cfg, shards=small_shards, name="final")
    last.finish()
    assert resumed_line(store, tag_for(4)) in last.log()
    assert store.list_dirs(CKPTS) == committed_tags(store, CKPTS) == [tag_for(6), tag_for(8)]
    expected = checkpoint_weights(reference_run, tag_for(8), tmp_path / "reference")
    assert_bitwise(expected, checkpoint_weights(cfg, tag_for(8), tmp_path))
    assert logged_losses(cfg) == logged_losses(reference_run)


def test_disk_full_while_saving_fails_clearly_and_commits_nothing(
        ranks: TrainRanks, small_shards: list[str], small_disk, tmp_path: Path) -> None:
    root = small_disk("60m")  # one checkpoint (54 MB) fits, a second does not
    cfg = two_rank_config(tmp_path, "train.steps=4", "train.checkpoint_every=2", f"storage.root={root}")
    attempt = ranks.start(cfg, shards=small_shards, name="full")
    codes = attempt.join(120)

    assert codes[0] != 0 and codes[1] != 0
    store, partial = LocalStore(root), root / CKPTS / tag_for(4)
    logs = attempt.log(0) + attempt.log(1)
    assert f"OSError: [Errno 28] disk full: no space left on device writing checkpoint {tag_for(4)} under {partial}" \
        in logs, logs[-3000:]
    assert f"delete {partial}), point storage.root at a larger disk" in logs
    assert committed_tags(store, CKPTS) == [tag_for(2)] and not (partial / MANIFEST).exists()
    previous = checkpoint_weights(cfg, tag_for(2), tmp_path)
    assert all(torch.isfinite(w).all() for w in previous.values()), "the previous checkpoint still loads"


def test_a_shard_missing_at_training_time_fails_the_run_naming_it(
        ranks: TrainRanks, small_shards: list[str], tmp_path: Path) -> None:
    shards = [shutil.copy(path, tmp_path) for path in small_shards]
    Path(shards[1]).unlink()  # listed in the prep manifest, gone from disk
    cfg = two_rank_config(tmp_path, "train.steps=4", "train.checkpoint_every=2")
    attempt = ranks.start(cfg, shards=shards, name="missing-shard")
    codes = attempt.join(120)
    assert codes[0] != 0 and codes[1] != 0
    # Only the rank that reads the shard this epoch meets it (ranks read whole shards of their own); the other
    # fails once its peer is gone. A submitit job reports the first failed rank's error (cluster/waiting.py).
    reader = next(r for r in (0, 1) if 1 in order.rank_shards(3, seed=cfg.seed, epoch=0, rank=r, world_size=2))
    assert f"ValueError: shard {shards[1]} is missing: 1 bad shard(s) in epoch 0, more than " \
           "train.max_bad_shards=0" in attempt.log(reader), attempt.log(reader)[-3000:]
