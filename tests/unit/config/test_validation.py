"""Impossible combinations beyond tests/unit/config/test_loading.py, refused when the config loads (the sweep
flow loads every grid point before it submits anything), each naming the key and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ito_core.config import load_config


@pytest.mark.parametrize(("overrides", "key", "fix"), [
    # a micro-batch larger than (or not dividing) what each rank gets of the global batch
    (["train.batch_size=16", "cluster.tasks_per_node=2", "train.micro_batch_size=16"], "train.micro_batch_size",
     "pick a divisor of the per-rank batch"),
    (["train.batch_size=16", "cluster.tasks_per_node=2", "train.micro_batch_size=3"], "train.micro_batch_size",
     "pick a divisor of the per-rank batch"),
    # S3 storage without a bucket
    (["storage=s3", "storage.root=s3://"], "storage.root", "storage.root=s3://BUCKET/PREFIX"),
    (["storage=s3", "storage.root=s3:///runs"], "storage.root", "storage.root=s3://BUCKET/PREFIX"),
    # cluster settings no executor could run, refused with the rest (not when the executor is built, after prep)
    (["cluster=slurm", "cluster.gpus_per_node=4", "cluster.tasks_per_node=2"], "cluster.tasks_per_node",
     "set cluster.tasks_per_node=4"),
    # tolerances below zero
    (["train.max_bad_shards=-1"], "train.max_bad_shards", "use >= 0"),
    (["train.max_skipped_steps=-1"], "train.max_skipped_steps", "use >= 0"),
])
def test_impossible_combinations_name_the_key_and_the_fix(overrides: list[str], key: str, fix: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(overrides)
    assert f"config {key}" in str(err.value) and fix in str(err.value)


@pytest.mark.parametrize("where", ["file", "under_a_file"])
def test_a_storage_root_that_is_a_file_is_refused_up_front(tmp_path: Path, where: str) -> None:
    """Before the fix prep failed with NotADirectoryError, was retried, and the report task failed three times."""
    (tmp_path / "outputs").write_text("not a folder")
    root = tmp_path / "outputs" / ("" if where == "file" else "store")
    with pytest.raises(ValueError, match=r"config storage\.root: .* existing file.*point storage\.root at a folder"):
        load_config([f"storage.root={root}"])


def test_an_unwritable_storage_root_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root may write anywhere: answer as access(2) answers any other user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and Path(path) != read_only)
    with pytest.raises(ValueError, match=r"config storage\.root: .* cannot write; point storage\.root at a writable"):
        load_config([f"storage.root={read_only / 'store'}"])


def test_a_storage_root_still_to_be_made_is_fine(tmp_path: Path) -> None:
    assert load_config([f"storage.root={tmp_path / 'new' / 'store'}"]).storage.root.endswith("store")
