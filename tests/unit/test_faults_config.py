"""Impossible combinations beyond tests/unit/test_config.py, refused when the config loads (the sweep
flow loads every grid point before it submits anything), each naming the key and the fix."""

from __future__ import annotations

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
    # tolerances below zero
    (["train.max_bad_shards=-1"], "train.max_bad_shards", "use >= 0"),
    (["train.max_skipped_steps=-1"], "train.max_skipped_steps", "use >= 0"),
])
def test_impossible_combinations_name_the_key_and_the_fix(overrides: list[str], key: str, fix: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(overrides)
    assert f"config {key}" in str(err.value) and fix in str(err.value)
