"""data=raw prep on the single-node SLURM cluster: ``cluster.prep_tasks=2`` makes the prep stage a 2-task job
array plus a final job (cluster/prep_jobs.py). The committed shards and manifest equal a one-process prep's,
with the copies planted in the other task's shards removed once, and the flow's process writes no shard."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.slurm_cluster import SlurmCluster
from unit.data.test_prep_array import COPIES, NO_EVAL, _folder

from ito_core.config import load_config
from ito_core.prep import prepare
from ito_core.storage import MANIFEST, LocalStore

pytestmark = [pytest.mark.slurm]


@pytest.mark.timeout(300)
def test_prep_runs_as_a_job_array_and_equals_a_one_process_prep(
        slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import stages
    from ito_core.data import prep_array, raw_prep

    _folder(tmp_path / "in")
    common = ["data=raw", "data.input_kind=folder", f"data.input={tmp_path / 'in'}", "data.image_size=24",
              "data.samples_per_shard=3", "data.prep_workers=1", *NO_EVAL, f"cluster.work_dir={tmp_path / 'work'}"]
    local = load_config([*common, f"storage.root={tmp_path / 'one'}"])
    one_store = LocalStore(local.storage.root)
    one_key = prepare(local.data, local.eval, one_store)["train"]

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("the flow's process wrote shards")

    for module in (raw_prep, prep_array):
        monkeypatch.setattr(module, "write_raw_shards", not_here)
    cfg = load_config([*common, f"storage.root={tmp_path / 'array'}", "cluster=slurm", "cluster.prep_tasks=2"])
    keys = stages.prep_task.fn(cfg)

    assert keys["train"] == one_key
    store = LocalStore(cfg.storage.root)
    manifest, one = store.read_json(f"{one_key}/{MANIFEST}"), one_store.read_json(f"{one_key}/{MANIFEST}")
    assert manifest == one and one["stats"]["skipped"]["duplicate"] == len(COPIES)
    for shard in one["shards"]:
        array_tar, one_tar = (Path(s.url(f"{one_key}/{shard['name']}")) for s in (store, one_store))
        assert array_tar.read_bytes() == one_tar.read_bytes(), shard["name"]
    jobs = Path(cfg.cluster.work_dir).resolve() / one_key / "prep-jobs"
    scripts = [p.read_text() for p in jobs.glob("*_submission.sh")]
    assert any("#SBATCH --array=0-1" in s for s in scripts), "the two tasks went to SLURM as one array"
    markers = sorted(p.name for p in Path(store.url(f"{one_key}/prep-tasks")).iterdir())
    assert markers == ["task-0000-of-0002.json", "task-0001-of-0002.json"]


@pytest.mark.timeout(300)
def test_webdataset_indexing_runs_as_a_job_array(slurm_cluster: SlurmCluster, tmp_path: Path,
                                                 small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import stages
    from ito_core.data import external

    pattern = str(Path(small_shards[0]).parent / "shard-{000000..000002}.tar")
    common = ["data=webdataset", f"data.shards=['{pattern}']", *NO_EVAL, f"cluster.work_dir={tmp_path / 'work'}"]
    local = load_config([*common, f"storage.root={tmp_path / 'one'}"])
    one_key = prepare(local.data, local.eval, LocalStore(local.storage.root))["train"]

    def not_here(url: str) -> int:
        raise AssertionError("the flow's process read a shard")

    monkeypatch.setattr(external, "count_samples", not_here)
    cfg = load_config([*common, f"storage.root={tmp_path / 'array'}", "cluster=slurm", "cluster.prep_tasks=2"])
    assert stages.prep_task.fn(cfg)["train"] == one_key
    manifest = LocalStore(cfg.storage.root).read_json(f"{one_key}/{MANIFEST}")
    assert manifest == LocalStore(local.storage.root).read_json(f"{one_key}/{MANIFEST}")
    assert manifest["num_samples"] == 96 and len(manifest["shards"]) == 3
