"""flows.stages: every stage task skips itself the same way when its artifacts are committed, and says so."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from flows.stages import prep_task, reuse, strip_task
from ito_core.artifacts import RunLayout, prep_keys
from ito_core.config import load_config
from ito_core.storage import LocalStore, commit


def test_reuse_needs_every_key_committed_and_a_usable_result(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    store = LocalStore(tmp_path)
    commit(store, "a", {"n": 1})
    caplog.set_level(logging.INFO, logger="flows")
    assert reuse("prep", store, ["a", "b"], lambda: "keys") is None  # "b" is missing: the stage runs
    assert reuse("eval", store, ["a"], lambda: None) is None  # committed, but made with other settings
    assert "skipping" not in caplog.text
    assert reuse("strip", store, ["a"], lambda: store.read_json("a/manifest.json")) == {"n": 1}
    assert f"strip: {store.url('a')} already committed, skipping" in caplog.text


def test_committed_stages_skip_without_touching_their_inputs(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config([f"storage.root={tmp_path}", f"cluster.work_dir={tmp_path / 'work'}"])
    store, keys = LocalStore(tmp_path), prep_keys(cfg.data, cfg.eval)
    for key in keys.values():
        commit(store, key, {"shards": []})
    run = RunLayout("runs/0123456789abcdef")
    commit(store, run.model, {"checkpoint": "step_00000002"})
    caplog.set_level(logging.INFO, logger="flows")
    assert prep_task.fn(cfg) == keys
    assert strip_task.fn(cfg, run.key) == {"checkpoint": "step_00000002"}
    assert caplog.text.count("already committed, skipping") == 2
    assert not list(tmp_path.rglob("*.tar")), "prep wrote no shards"  # and strip had no checkpoint to read
