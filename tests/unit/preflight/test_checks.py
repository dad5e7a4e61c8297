"""The preflight's checks one by one, on local files (S3, SLURM and Prefect against the real things:
tests/integration/test_preflight_*.py and test_prefect_auth.py)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch

from flows.preflight import preflight, skip_set
from flows.stages import train_task
from flows.sweep import ito_sweep
from ito_core.artifacts import train_data_key
from ito_core.config import StorageConfig, load_config
from ito_core.data.openclipart import openclipart_files
from ito_core.eval.linear_probe import linear_probe_metrics, split_indices
from ito_core.eval.modality_gap import modality_gap_metrics
from ito_core.eval.names import TASK_METRICS, expected_metrics
from ito_core.eval.ranking import classification_metrics
from ito_core.eval.retrieval import retrieval_metrics
from ito_core.preflight import check_inputs, check_report_metrics, check_shard_count, check_storage, run_inputs
from ito_core.prep import _train_samples, train_sample_count
from ito_core.storage import LocalStore, commit


def test_the_metric_names_are_the_ones_the_eval_functions_record() -> None:
    gen = torch.Generator().manual_seed(0)
    images, texts = torch.randn(40, 8, generator=gen), torch.randn(40, 8, generator=gen)
    labels, owners = torch.arange(40) % 4, torch.arange(40)
    splits = split_indices(labels, val_fraction=0.25, test_fraction=0.25, seed=0)
    recorded = {"zeroshot_classification": classification_metrics(torch.arange(40) % 3, labels, 4),
                "zeroshot_retrieval": retrieval_metrics(images, texts, owners),
                "linear_probe": linear_probe_metrics(images, labels, splits=splits, c_grid=[1.0]),
                "modality_gap": modality_gap_metrics(images, texts, owners)}
    assert {task: sorted(metrics) for task, metrics in recorded.items()} == \
        {task: sorted(names) for task, names in TASK_METRICS.items()}


def test_flair_records_text_conditioned_metrics_too() -> None:
    names = expected_metrics(load_config(["method=flair"]).eval, method="flair")
    assert "fashion_mnist/tc_acc1" in names and "shapes/tc_image_retrieval_recall@1" in names
    assert "shapes/tc_centroid_distance" not in names


def test_default_plot_patterns_may_miss_an_own_one_may_not() -> None:
    quiet = load_config(["eval.linear_probe=", "eval.modality_gap="])  # */lp_acc1 and */centroid_distance: no match
    assert not any(f.failed for f in check_report_metrics([quiet]))
    own = load_config(["report.plot_metrics=[final_align_loss,'*/lp_acc1x']", "report.metrics=['*/acc*']"])
    [finding] = check_report_metrics([own])
    assert finding.failed and "config report.plot_metrics: '*/lp_acc1x' matches no metric" in finding.message


def _tar(path: Path, members: int = 1) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(members):
            info = tarfile.TarInfo(f"{i:04d}.txt")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))


def test_inputs_of_every_kind_must_exist_and_hold_something(tmp_path: Path) -> None:
    (tmp_path / "tars").mkdir()
    _tar(tmp_path / "tars" / "00000.tar")
    (tmp_path / "empty.csv").touch()
    (tmp_path / "eval").mkdir()
    ok_cfgs = [load_config(["data=raw", "data.input_kind=img2dataset", f"data.input={tmp_path / 'tars'}"]),
               load_config(["data=webdataset", f"data.shards=['{tmp_path}/tars/{{00000..00000}}.tar']"])]
    assert not any(f.failed for cfg in ok_cfgs for f in check_inputs(run_inputs(cfg)))
    bad = {"data.input": load_config(["data=raw", "data.input_kind=table", f"data.input={tmp_path / 'empty.csv'}"]),
           "data.shards": load_config(["data=webdataset", f"data.shards=['{tmp_path}/tars/{{00000..00002}}.tar']"]),
           "eval.datasets.mine": load_config([f"+eval.datasets.mine=folder:{tmp_path / 'eval'}",
                                              "eval.zero_shot=mine"])}
    problems = {key: check_inputs(run_inputs(cfg)) for key, cfg in bad.items()}
    assert "is an empty file; point data.input at your table data" in problems["data.input"][0].message
    assert "2 of its 3 file(s) are missing or empty, e.g." in problems["data.shards"][0].message
    assert "is an empty folder; fix the path in eval.datasets.mine" in problems["eval.datasets.mine"][0].message
    unused = load_config([f"+eval.datasets.mine=folder:{tmp_path / 'nothing'}"])  # no task names it: not read
    assert run_inputs(unused) == []


def test_the_embedded_count_is_what_prep_writes() -> None:
    data = load_config(["data.max_train_samples=700", "data.shapes_train=500",
                        "data.sources=[fashion_mnist,shapes]"]).data
    assert train_sample_count(data) == sum(1 for _ in _train_samples(data, {})) == 1200


def test_the_open_clip_art_count_is_its_files_under_the_cap() -> None:
    """Not read: near-duplicates of eval stamps are dropped while prep reads, so the count is an upper bound."""
    capped = load_config(["data.max_train_samples=700", "data.sources=[openclipart]"]).data
    assert train_sample_count(capped) == 700
    everything = load_config(["data.sources=[openclipart]"]).data
    assert train_sample_count(everything) == len(openclipart_files())


def test_shards_come_from_the_committed_manifest_when_there_is_one(tmp_path: Path) -> None:
    cfg = load_config(["cluster=slurm", "cluster.tasks_per_node=4", f"storage.root={tmp_path}"])
    store = LocalStore(tmp_path)
    assert not check_shard_count(cfg, store).failed  # 36 embedded shards before prep
    commit(store, train_data_key(cfg.data), {"shards": [{"num_samples": 9}] * 3, "num_samples": 27})
    finding = check_shard_count(cfg, store)
    assert finding.failed and "has 3 shard(s) (prep manifest" in finding.message
    assert "set data.samples_per_shard <= 6, or fewer ranks (cluster.nodes=1 x cluster.tasks_per_node=4)" in \
        finding.message
    raw = load_config(["data=raw", "data.input_kind=folder", f"data.input={tmp_path}"])
    assert check_shard_count(raw, None).status == "skipped"


def test_a_local_root_that_cannot_be_written_fails(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    cfg = load_config([f"storage.root={tmp_path / 'new' / 'root'}"])
    assert not check_storage(cfg.storage).failed and not (tmp_path / "new").exists(), "nothing created"
    blocked = StorageConfig(root=str(tmp_path / "file" / "root"))  # config validation refuses it too
    finding = check_storage(blocked)
    assert finding.failed and "is a file, not a folder" in finding.message


def test_skips_are_named_and_unknown_ones_refused() -> None:
    cfg = load_config([])
    assert [f.status for f in preflight([cfg], "strip", ["storage"])] == ["skipped"]
    assert skip_set(["all"]) == {"storage", "inputs", "slurm", "shards", "metrics", "prefect"}
    with pytest.raises(ValueError, match=r"--skip-check \['storag'\]: choose from"):
        skip_set(["storag"])


def test_a_deployment_run_fails_its_preflight_before_submitting_anything(tmp_path: Path) -> None:
    state = ito_sweep.fn(overrides=["report.metrics=[nope]", "cluster.tasks_per_node=4", "train.batch_size=8",
                                    "data.max_train_samples=8"], storage_root=str(tmp_path / "store"))
    assert state.is_failed()
    shards, metrics = state.message.splitlines()  # one line per failed check
    assert shards.startswith("preflight shards: failed") and metrics.startswith("preflight metrics: failed")
    assert not (tmp_path / "store").exists()


def test_training_is_not_submitted_with_fewer_shards_than_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    cfg = load_config([f"storage.root={tmp_path}", "cluster.tasks_per_node=2"])
    store = LocalStore(tmp_path)
    commit(store, "data/x", {"shards": [{"name": "0.tar", "num_samples": 4}], "num_samples": 4})
    monkeypatch.setattr("flows.stages.submit_training", lambda *a, **kw: pytest.fail("submitted"))
    with pytest.raises(ValueError, match=r"1 shard\(s\) for 2 ranks"):
        train_task.fn(cfg, {"train": "data/x"}, "runs/k")
