"""TrainState is the loop's state as a dataclass; its checkpoint form is the dict the loop saved before it existed,
keys and order included, so checkpoints written before resume into it and new ones keep their bytes."""

from __future__ import annotations

import pickle

import pytest

from ito_core.train_state import TrainState

ROW = {"step": 2, "lr": 1e-3, "loss": 2.5, "skipped_steps": 0, "samples_per_s": 10.0}


def test_a_fresh_state_saves_what_the_dict_loop_saved() -> None:
    assert TrainState().state_dict() == {"step": 0, "skipped_steps": 0, "history": []}


def test_the_checkpoint_dict_keeps_its_keys_their_order_and_its_bytes() -> None:
    # What the dict loop checkpointed: {"step", "skipped_steps", "history"} with "data" added at the first save.
    saved = {"step": 4, "skipped_steps": 1, "history": [ROW], "data": {"batch": 4, "world_size": 2}}
    state = TrainState.from_state_dict(saved)
    assert (state.step, state.skipped_steps, state.history, state.data) == (4, 1, [ROW], {"batch": 4, "world_size": 2})
    assert list(state.state_dict()) == list(saved)
    assert pickle.dumps(state.state_dict()) == pickle.dumps(saved)  # torch.save pickles it: the same bytes


def test_keys_a_checkpoint_lacks_keep_their_start_values() -> None:
    assert TrainState.from_state_dict({"step": 3, "history": []}) == TrainState(step=3)


def test_an_unknown_key_is_a_bug_not_state_to_drop() -> None:
    with pytest.raises(AssertionError, match="epoch"):
        TrainState.from_state_dict({"step": 3, "epoch": 1})
