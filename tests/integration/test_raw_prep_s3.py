"""data=raw against a real S3 endpoint (rclone): inputs read from the bucket, shards written to it, read back
by the training stream; a rerun after losing one shard and the manifest re-uploads only that shard."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from fixtures.raw_inputs import CORRUPT, image
from fixtures.s3_server import S3Bucket

from ito_core.config import load_config
from ito_core.data.loader import TrainStream, iter_shard_samples
from ito_core.prep import prepare, shard_list, shard_urls
from ito_core.storage import MANIFEST, build_store

pytestmark = pytest.mark.s3

NO_EVAL = ["eval.zero_shot=", "eval.retrieval=", "eval.linear_probe=", "eval.modality_gap="]


def _put(bucket: S3Bucket, key: str, body: bytes | str) -> None:
    bucket.server.client.put_object(Bucket=bucket.name, Key=key, Body=body.encode() if isinstance(body, str) else body)


def _tar(members: list[tuple[str, bytes | str]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, body in members:
            data = body.encode() if isinstance(body, str) else body
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _inputs(bucket: S3Bucket) -> dict[str, list[str]]:
    """One input of each kind in the bucket: 7 good samples, 1 corrupt image, 1 missing file each."""
    for i in range(8):
        _put(bucket, f"in/folder/{i}.jpg", image(i, (64, 48)) if i < 7 else CORRUPT)
        _put(bucket, f"in/folder/{i}.txt", f"caption {i}\nanother caption {i}")
    _put(bucket, "in/folder/gone.txt", "its image was never uploaded")
    rows = ["image,caption"] + [f"folder/{i}.jpg,caption {i}" for i in range(8)] + ["folder/nothing.jpg,x"]
    _put(bucket, "in/pairs.csv", "\n".join(rows) + "\n")  # paths relative to the table's folder
    members: list[tuple[str, bytes | str]] = []
    for i in range(8):
        members += [(f"{i:09d}.jpg", image(i, (64, 48)) if i < 7 else CORRUPT), (f"{i:09d}.txt", f"caption {i}")]
    members.append(("000000008.txt", "no image"))
    _put(bucket, "in/tars/00000.tar", _tar(members))
    return {"folder": ["data.input_kind=folder", f"data.input={bucket.url('in/folder')}"],
            "table": ["data.input_kind=table", f"data.input={bucket.url('in/pairs.csv')}"],
            "img2dataset": ["data.input_kind=img2dataset", "data.caption_columns=[txt]",
                            f"data.input='{bucket.url('in/tars/{00000..00000}.tar')}'"]}  # quoted: braces


def _tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.zeros(len(texts), 8, dtype=torch.long)


def test_every_input_kind_from_and_to_s3(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.server.endpoint_url)  # the input reader's endpoint
    for kind, overrides in _inputs(s3_bucket).items():
        cfg = load_config(["data=raw", *overrides, *s3_bucket.storage_overrides(f"store-{kind}"), *NO_EVAL,
                           "data.image_size=32", "data.samples_per_shard=3", "data.prep_workers=2"])
        store = build_store(cfg.storage)
        keys = prepare(cfg.data, cfg.eval, store)
        manifest = store.read_json(f"{keys['train']}/{MANIFEST}")
        assert manifest["stats"]["skipped"] == {"corrupt_image": 1, "missing_file": 1}, kind
        assert manifest["stats"]["kept"] == manifest["num_samples"] == 7
        urls, count = shard_urls(store, keys["train"])
        assert count == 7 and all(url.startswith("s3://") for url in urls)
        samples = list(iter_shard_samples(urls))
        assert len(samples) == 7 and json.loads(samples[0]["json"])["captions"][0] == "caption 0"
        stream = TrainStream(urls, batch_size=7, num_texts=1, tokenizer=_tokenizer, seed=0, rank=0, world_size=1,
                             shard_samples=shard_list(store, keys["train"])[1])
        batch = next(iter(stream))
        assert batch["images"].shape == (7, 3, 32, 32) and len(set(batch["keys"])) == 7


def test_rerun_reuploads_only_the_lost_shard(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_bucket.server.endpoint_url)
    overrides = _inputs(s3_bucket)["folder"]
    cfg = load_config(["data=raw", *overrides, *s3_bucket.storage_overrides("store"), *NO_EVAL,
                       "data.image_size=32", "data.samples_per_shard=3", "data.prep_workers=1"])
    store = build_store(cfg.storage)
    key = prepare(cfg.data, cfg.eval, store)["train"]
    first = store.read_json(f"{key}/{MANIFEST}")
    backing = Path(s3_bucket.server.data_dir, s3_bucket.name, "store", key)  # rclone keeps objects as files
    before = {p.name: p.stat().st_mtime_ns for p in backing.iterdir()}
    s3_bucket.server.client.delete_objects(Bucket=s3_bucket.name, Delete={"Objects": [
        {"Key": f"store/{key}/{MANIFEST}"}, {"Key": f"store/{key}/shard-000001.tar"}]})

    again = prepare(cfg.data, cfg.eval, store)

    assert again["train"] == key and store.read_json(f"{key}/{MANIFEST}") == first
    after = {p.name: p.stat().st_mtime_ns for p in backing.iterdir()}
    changed = sorted(name for name in after if after[name] != before.get(name))
    assert changed == [MANIFEST, "shard-000001.tar", "shard-000001.tar.stats.json"]
