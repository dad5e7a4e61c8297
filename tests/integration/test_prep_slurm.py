"""data=raw prep on the single-node SLURM cluster: ``cluster.prep_tasks=2`` makes the prep stage a 2-task job
array plus a final job (cluster/prep_jobs.py). The committed shards and manifest equal a one-process prep's,
with the copies planted in the other task's shards removed once, and the flow's process writes no shard."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path

import psutil
import pytest
from fixtures.slurm_cluster import SlurmCluster
from unit.data.test_prep_array import COPIES, NO_EVAL, _folder

from cluster.prep_jobs import run_prep_array
from ito_core.artifacts import train_data_key
from ito_core.config import load_config
from ito_core.data.shard_writer import RECORDS_SUFFIX, SIDECAR_SUFFIX, shard_name
from ito_core.prep import prepare
from ito_core.storage import MANIFEST, LocalStore

pytestmark = [pytest.mark.slurm]


@pytest.mark.timeout(300)
def test_prep_runs_as_a_job_array_and_equals_a_one_process_prep(
        slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import stages
    from ito_core import prep_array
    from ito_core.data import raw_prep

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


SLOW_WRITES = '''
import time
from ito_core.data import raw_prep
_write_shard = raw_prep.write_shard
def _slow(task):
    time.sleep(1.5)
    return _write_shard(task)
raw_prep.write_shard = _slow
'''


def kill_array_task(index: int) -> None:
    """SIGKILL the Python process of array task ``index`` (as the OOM killer or a node loss would end it; a plain
    scancel sends SIGTERM first, which submitit ignores)."""
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error, OSError):
            if ("submitit.core._submit" in " ".join(proc.info["cmdline"] or [])
                    and proc.environ().get("SLURM_ARRAY_TASK_ID") == str(index)):
                proc.kill()
                return
    pytest.fail(f"no process of array task {index}")


@pytest.mark.timeout(300)
def test_a_killed_array_task_reruns_only_its_unfinished_shards(
        slurm_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Task 1 of 2 is killed (SIGKILL) once it wrote its first shard; the stage fails.
    The rerun resubmits the array: task 0's shards and task 1's finished one are not written again."""
    from cluster.waiting import JobFailedError
    from flows import stages

    _folder(tmp_path / "in")
    # Every job of this test writes a shard 1.5 s after its fetch (a module the jobs' Python loads at start):
    # slow enough to cancel task 1 between its shards. The jobs inherit the environment (sbatch --export=ALL).
    (tmp_path / "slow" / "sitecustomize.py").parent.mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW_WRITES)
    # The repository first: sitecustomize runs before ``python -m`` puts the job's working folder on sys.path.
    monkeypatch.setenv("PYTHONPATH", f"{Path(__file__).resolve().parents[2]}:{tmp_path / 'slow'}")
    cfg = load_config(["data=raw", "data.input_kind=folder", f"data.input={tmp_path / 'in'}", "data.image_size=24",
                       "data.samples_per_shard=2", "data.prep_workers=1", *NO_EVAL, "cluster=slurm",
                       "cluster.prep_tasks=2", f"storage.root={tmp_path / 'store'}",
                       f"cluster.work_dir={tmp_path / 'work'}"])
    store = LocalStore(cfg.storage.root)
    key = train_data_key(cfg.data)
    out_dir = Path(store.url(key))

    def cancel_task_1_after_its_first_shard() -> None:
        deadline = time.monotonic() + 120
        while not (out_dir / "shard-000001.tar.stats.json").exists():
            assert time.monotonic() < deadline, "task 1 never finished a shard"
            time.sleep(0.1)
        kill_array_task(1)

    errors: list[BaseException] = []

    def canceller_main() -> None:
        try:
            cancel_task_1_after_its_first_shard()
        except BaseException as err:  # reported by the test thread
            errors.append(err)

    canceller = threading.Thread(target=canceller_main, daemon=True)
    canceller.start()
    with pytest.raises(JobFailedError):
        stages.prep_task.fn(cfg)
    canceller.join()
    assert not errors, errors
    finished = sorted(int(p.name[6:12]) for p in out_dir.glob("shard-*.tar.stats.json"))
    task1_done = [i for i in finished if i % 2 == 1]  # task 1's shards: 1, 3, 5, 7
    assert task1_done and len(task1_done) < 4, f"task 1 was killed mid-way, after shards {task1_done}"
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir() if p.name.startswith("shard-")}
    logs = {i: (out_dir / f"{shard_name(i)}{RECORDS_SUFFIX}").read_text() for i in finished}

    rerun = run_prep_array(cfg, key, logging.getLogger("test.prep"))  # what the prep stage runs again

    assert [task["written"] for task in rerun["tasks"]] == [0, 4 - len(task1_done)]
    for i in finished:  # not written again, unless the final step dropped a copy from it (its log says so)
        if (out_dir / f"{shard_name(i)}{RECORDS_SUFFIX}").read_text() == logs[i]:
            files = [shard_name(i) + suffix for suffix in ("", RECORDS_SUFFIX, SIDECAR_SUFFIX)]
            assert all((out_dir / f).stat().st_mtime_ns == before[f] for f in files if f in before), i
    assert store.read_json(f"{key}/{MANIFEST}")["stats"]["skipped"]["duplicate"] == len(COPIES)
