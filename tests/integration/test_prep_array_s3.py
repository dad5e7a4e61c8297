"""data=raw prep as a 2-task array (its tasks and final step run here, ito_core/prep_array.py) from the
S3 server to the S3 server, for a parquet-free table and img2dataset tars: the committed shards and manifest
equal a one-process prep's, and an image planted again in the other task's shard is removed once (its shard
rewritten in the bucket)."""

from __future__ import annotations

import pytest
from fixtures.raw_inputs import image
from fixtures.s3_server import S3Bucket
from integration.test_raw_prep_s3 import NO_EVAL, _put, _tar

from ito_core.artifacts import train_data_key
from ito_core.config import load_config
from ito_core.prep import prepare
from ito_core.prep_array import finish_array, prep_task
from ito_core.storage import MANIFEST, build_store

pytestmark = pytest.mark.s3

COPIES = {4: 1, 7: 5}  # record -> the record whose image it repeats: shard 1 <- shard 0, shard 2 <- shard 1


def _inputs(bucket: S3Bucket) -> dict[str, list[str]]:
    """9 records of each kind, shards of 3: task 0 writes shards 0 and 2, task 1 shard 1."""
    for i in range(9):
        _put(bucket, f"in/folder/{i}.jpg", image(COPIES.get(i, i), (64, 48)))
    _put(bucket, "in/pairs.csv", "\n".join(["image,caption", *(f"folder/{i}.jpg,caption {i}" for i in range(9))]))
    members: list[tuple[str, bytes | str]] = []
    for i in range(9):
        members += [(f"{i:09d}.jpg", image(COPIES.get(i, i), (64, 48))), (f"{i:09d}.txt", f"caption {i}")]
    _put(bucket, "in/tars/00000.tar", _tar(members))
    return {"table": ["data.input_kind=table", f"data.input={bucket.url('in/pairs.csv')}"],
            "img2dataset": ["data.input_kind=img2dataset", "data.caption_columns=[txt]",
                            f"data.input='{bucket.url('in/tars/{00000..00000}.tar')}'"]}


@pytest.mark.parametrize("kind", ["table", "img2dataset"])
def test_an_array_prep_from_s3_to_s3_equals_a_one_process_prep(s3_bucket: S3Bucket, kind: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.server.endpoint_url)  # the input and shard readers'
    overrides = ["data=raw", *_inputs(s3_bucket)[kind], *NO_EVAL, "data.image_size=32", "data.samples_per_shard=3"]
    one = load_config([*overrides, *s3_bucket.storage_overrides("one")])
    array = load_config([*overrides, *s3_bucket.storage_overrides("array")])
    one_store, store, key = build_store(one.storage), build_store(array.storage), train_data_key(one.data)
    assert prepare(one.data, one.eval, one_store)["train"] == key

    for task in (1, 0):
        prep_task(array.data, store, key, task=task, num_tasks=2)
    manifest = finish_array(array.data, store, key, num_tasks=2)

    reference = one_store.read_json(f"{key}/{MANIFEST}")
    assert manifest == reference == store.read_json(f"{key}/{MANIFEST}")
    assert reference["stats"]["skipped"] == {"duplicate": 2} and reference["num_samples"] == 7
    client = s3_bucket.server.client
    for shard in reference["shards"]:
        objects = [client.get_object(Bucket=s3_bucket.name, Key=f"{prefix}/{key}/{shard['name']}")["Body"].read()
                   for prefix in ("one", "array")]
        assert objects[0] == objects[1], shard["name"]
