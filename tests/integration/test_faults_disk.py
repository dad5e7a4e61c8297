"""A full disk (a small tmpfs, mounted per test) while prep writes shards and while the store writes a file:
a clear ENOSPC error naming the path and the fix, nothing committed, nothing half-written left readable.
(A full disk while saving a checkpoint: tests/integration/test_faults_training.py.)"""

from __future__ import annotations

import errno

import pytest

from ito_core.artifacts import committed, train_data_key
from ito_core.config import load_config
from ito_core.prep import prepare
from ito_core.storage import LocalStore

NO_EVAL = ("eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap=")


def test_disk_full_while_writing_shards(small_disk) -> None:
    root = small_disk("1m")  # 2000 shapes at 64 px take ~5 MB
    cfg = load_config(["data.sources=[shapes]", "data.shapes_train=2000", "data.samples_per_shard=200",
                       f"storage.root={root}", *NO_EVAL])
    store, key = LocalStore(root), train_data_key(cfg.data)

    with pytest.raises(OSError) as failure:
        prepare(cfg.data, cfg.eval, store)

    assert failure.value.errno == errno.ENOSPC
    message = str(failure.value)
    assert f"disk full: no space left on device writing the shards of {store.url(key)}" in message, message
    assert "Nothing was committed" in message and "point storage.root at a larger disk" in message
    assert not committed(store, key) and not list(root.rglob("*.tar")), "partial shards deleted, space freed"
    cfg_fits = load_config(["data.sources=[shapes]", "data.shapes_train=100", "data.samples_per_shard=50",
                            f"storage.root={root}", *NO_EVAL])
    prepare(cfg_fits.data, cfg_fits.eval, store)  # the freed space is usable again
    assert committed(store, train_data_key(cfg_fits.data))


def test_disk_full_while_the_store_writes_a_file(small_disk) -> None:
    root = small_disk("64k")
    store = LocalStore(root)
    store.write_text("runs/a/train/manifest.json", '{"step": 1}')

    with pytest.raises(OSError) as failure:
        store.write_text("runs/a/train/manifest.json", "x" * (1 << 20))

    assert failure.value.errno == errno.ENOSPC
    assert f"writing runs/a/train/manifest.json under {root}/runs/a/train/manifest.json" in str(failure.value)
    assert "The old file (if any) is unchanged" in str(failure.value)
    assert store.read_json("runs/a/train/manifest.json") == {"step": 1}, "readers still see the whole old file"
    assert [p.name for p in (root / "runs/a/train").iterdir()] == ["manifest.json"], "no temporary file left"
