"""Eval on a user data set kept on a real S3 endpoint (rclone): a class-folder tree under a prefix with a
space in it is prepared into eval shards and scored zero-shot by an eval job (``eval.executor=job``,
submitit's LocalExecutor), which commits CLIP_benchmark records next to the run's model."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.s3_server import S3Bucket
from unit.eval.test_user_sets import NO_EMBEDDED, commit_random_model, write_class_tree

from flows.stages import eval_task, prep_task
from ito_core.artifacts import run_key
from ito_core.config import load_config
from ito_core.eval.stage import committed_eval
from ito_core.storage import MANIFEST, build_store

pytestmark = pytest.mark.s3


def test_zero_shot_on_a_class_folder_tree_in_s3_as_an_eval_job(s3_bucket: S3Bucket, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tree = write_class_tree(tmp_path / "colours", per_class=3)
    for path in sorted(tree.rglob("*.png")):
        s3_bucket.server.client.upload_file(str(path), s3_bucket.name,
                                            f"eval sets/colours/{path.relative_to(tree).as_posix()}")
    s3_bucket.server.client.put_object(Bucket=s3_bucket.name, Key="eval sets/colours/classnames.txt",
                                       Body=b"blue\ngreen\nred\n")
    # The eval set is read with the shard reader's env config; the job inherits it (and the credentials).
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.server.endpoint_url)
    cfg = load_config(["model=tiny", "data.image_size=32", "data.sources=[shapes]", "data.shapes_train=8",
                       *s3_bucket.storage_overrides(), "cluster=local", f"cluster.work_dir={tmp_path / 'work'}",
                       *NO_EMBEDDED, f'+eval.datasets.colours="folder:{s3_bucket.url("eval sets/colours")}"',
                       "eval.zero_shot=colours", "eval.executor=job", "wandb=disabled"])
    store, key = build_store(cfg.storage), run_key(cfg)

    data_keys = prep_task.fn(cfg)
    manifest = store.read_json(f"{data_keys['colours']}/{MANIFEST}")
    assert manifest["classnames"] == ["blue", "green", "red"] and manifest["num_samples"] == 9
    commit_random_model(store, cfg, key)
    records = eval_task.fn(cfg, data_keys, key)

    assert [(r["dataset"], r["task"]) for r in records] == [("colours", "zeroshot_classification")]
    assert set(records[0]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert records[0]["pretrained"] == store.url(f"{key}/model")
    assert committed_eval(store, key, cfg) == records  # committed to S3 by the job
    assert list((tmp_path / "work" / key / "eval-jobs").glob("*_result.pkl"))  # it really ran as a job
