"""data=raw prep as a job array (ito_core/prep_array.py), its tasks run here one after another: the
committed shards and manifest equal a one-process prep's for any number of tasks, duplicates planted in
different tasks' shards are removed once, and a killed task's rerun redoes only its unfinished shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from fixtures.raw_inputs import CORRUPT, image, write_files

from ito_core.artifacts import train_data_key
from ito_core.config import RunConfig, load_config
from ito_core.data import raw_prep
from ito_core.data.loader import iter_shard_samples
from ito_core.prep import prepare
from ito_core.prep_array import finish_array, prep_task
from ito_core.storage import MANIFEST, LocalStore

NO_EVAL = ["eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="]
# 15 images, shards of 3 (shard i = images 3i..3i+2); image 11 is corrupt. Image j is a byte copy of image
# COPIES[j]. With 2 tasks (task 0: shards 0, 2, 4; task 1: shards 1, 3) the copies 4, 13 and 12 are in another
# task's shard than their original, 8 and 7 in the same task's; with 3 tasks the pattern moves, the result must not.
COPIES = {4: 1, 8: 1, 7: 0, 13: 5, 12: 10}


def _folder(root: Path) -> Path:
    files: dict[str, bytes | str] = {}
    for i in range(15):
        files[f"{i:03d}.jpg"] = CORRUPT if i == 11 else image(COPIES.get(i, i), (60, 45))
        files[f"{i:03d}.txt"] = f"caption {i}"
    return write_files(root, files)


def _config(tmp_path: Path, store: str) -> RunConfig:
    return load_config(["data=raw", "data.input_kind=folder", f"data.input={tmp_path / 'in'}",
                        f"storage.root={tmp_path / store}", "data.image_size=24", "data.samples_per_shard=3",
                        "data.prep_workers=1", *NO_EVAL])


def _array(cfg: RunConfig, num_tasks: int) -> tuple[dict[str, Any], Path]:
    store, key = LocalStore(cfg.storage.root), train_data_key(cfg.data)
    for task in range(num_tasks):
        prep_task(cfg.data, store, key, task=task, num_tasks=num_tasks)
    return finish_array(cfg.data, store, key, num_tasks=num_tasks), Path(store.url(key))


@pytest.fixture
def reference(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    _folder(tmp_path / "in")
    cfg = _config(tmp_path, "one")
    store = LocalStore(cfg.storage.root)
    key = prepare(cfg.data, cfg.eval, store)["train"]
    return store.read_json(f"{key}/{MANIFEST}"), Path(store.url(key))


@pytest.mark.parametrize("num_tasks", [2, 3])
def test_an_array_prep_equals_a_one_process_prep(tmp_path: Path, reference: tuple[dict[str, Any], Path],
                                                 num_tasks: int) -> None:
    manifest, out_dir = _array(_config(tmp_path, f"array{num_tasks}"), num_tasks)
    one, one_dir = reference
    assert manifest == one
    assert one["stats"]["skipped"] == {"duplicate": len(COPIES), "corrupt_image": 1}  # each copy removed once
    for shard in one["shards"]:
        assert (out_dir / shard["name"]).read_bytes() == (one_dir / shard["name"]).read_bytes(), shard["name"]
    keys = [s["__key__"] for s in iter_shard_samples([str(out_dir / s["name"]) for s in manifest["shards"]])]
    assert len(keys) == len(set(keys)) == manifest["num_samples"] == 15 - len(COPIES) - 1  # 1 corrupt


def test_a_killed_task_reruns_only_its_unfinished_shards(tmp_path: Path, reference: tuple[dict[str, Any], Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, "array")
    store, key = LocalStore(cfg.storage.root), train_data_key(cfg.data)
    prep_task(cfg.data, store, key, task=0, num_tasks=2)
    write_shard = raw_prep.write_shard

    def killed_at_shard_3(task: raw_prep.ShardTask) -> dict[str, Any]:
        if task.index == 3:
            raise RuntimeError("killed")
        return write_shard(task)

    monkeypatch.setattr(raw_prep, "write_shard", killed_at_shard_3)
    with pytest.raises(RuntimeError, match="killed"):
        prep_task(cfg.data, store, key, task=1, num_tasks=2)
    monkeypatch.setattr(raw_prep, "write_shard", write_shard)
    out_dir = Path(store.url(key))
    with pytest.raises(ValueError, match="1 of 2 array tasks have not finished"):
        finish_array(cfg.data, store, key, num_tasks=2)
    done = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir() if p.name.startswith("shard-")}
    assert "shard-000001.tar" in done and "shard-000003.tar" not in done

    prep_task(cfg.data, store, key, task=1, num_tasks=2)  # the rerun

    rewritten = sorted(p.name for p in out_dir.iterdir() if p.name.startswith("shard-")
                       and done.get(p.name) != p.stat().st_mtime_ns)
    assert rewritten == ["shard-000003.tar", "shard-000003.tar.records.json", "shard-000003.tar.stats.json"]
    assert finish_array(cfg.data, store, key, num_tasks=2) == reference[0]


def test_an_index_array_equals_a_one_process_index(tmp_path: Path, shapes_shard_dir: Path) -> None:
    """data=webdataset: the tasks count the user's shards (3 shards, 2 tasks), the final step commits the same
    manifest one process writes."""
    from ito_core.data.external import index_external
    from ito_core.prep_array import finish_index, index_task

    pattern = str(shapes_shard_dir / "shard-{000000..000002}.tar")
    data = dataclasses.replace(load_config(["data=webdataset", "data.shards=[x]"]).data, shards=[pattern])
    one, array, key = LocalStore(tmp_path / "one"), LocalStore(tmp_path / "array"), train_data_key(data)
    index_external(one, key, data)
    with pytest.raises(ValueError, match="2 of 2 array tasks have not finished"):
        finish_index(data, array, key, num_tasks=2)
    assert [index_task(data, array, key, task=t, num_tasks=2)["written"] for t in (0, 1)] == [2, 1]
    manifest = finish_index(data, array, key, num_tasks=2)
    assert manifest == one.read_json(f"{key}/{MANIFEST}") and manifest["num_samples"] == 70
