"""Sweep points on 2 SLURM nodes (cluster/mn-up.sh), S3 storage on a real server the nodes reach.

One sweep trains the same point under ZeRO-2 and ZeRO-3 with ``cluster.nodes=2 cluster.tasks_per_node=1``:
each node uploads the checkpoint shards its rank wrote, rank 0 commits, then strip and eval run. The stripped
weights equal those of the same points trained by 1 node with 2 ranks (the local executor), bitwise.

The sweep is started from a shell that exported ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE`` (sbatch passes them
to the job): the job's own SLURM values must win, and the run must still train as one 2-rank group.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from fixtures.multinode_cluster import MultiNodeCluster
from fixtures.s3_server import S3Bucket
from fixtures.tiny_run import TINY_RUN
from safetensors.torch import load

from ito_core.storage import MANIFEST

SMALL_BUDGET = [*TINY_RUN[:-3], "data.max_train_samples=128", "data.shapes_eval=32", "eval.max_samples=32",
                "data.samples_per_shard=32", "train.steps=4", "train.checkpoint_every=2", "train.log_every=2",
                "deepspeed=zero2,zero3"]


@pytest.fixture
def prefect_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    return tmp_path


def _sweep(bucket: S3Bucket, tmp: Path, prefix: str, *cluster: str) -> dict[str, dict[str, torch.Tensor]]:
    """Run the grid; return each point's stripped weights by its ``deepspeed`` choice."""
    from flows.sweep import ito_sweep

    ito_sweep(overrides=[*SMALL_BUDGET, *bucket.storage_overrides(prefix), f"cluster.work_dir={tmp / prefix}",
                         *cluster], sweep_name=prefix)
    rows = list(csv.DictReader(io.StringIO(bucket.read(f"{prefix}/sweeps/{prefix}/report.csv").decode())))
    assert sorted(row["status"] for row in rows) == ["ok", "ok"], rows
    for row in rows:
        assert 0.0 <= float(row["fashion_mnist/acc1"]) <= 1.0
    return {row["deepspeed"]: load(bucket.read(f"{prefix}/{row['run']}/model/model.safetensors")) for row in rows}


def test_two_nodes_zero2_zero3_equal_one_node_two_ranks(mn_slurm: MultiNodeCluster, mn_bucket: S3Bucket,
                                                        prefect_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"MASTER_PORT": "29571", "RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)  # inherited by the jobs through sbatch's --export=ALL
    two_nodes = _sweep(mn_bucket, prefect_home, "two-nodes", "cluster=slurm", "cluster.nodes=2",
                       "cluster.tasks_per_node=1", "cluster.timeout_min=20")
    for name in ("MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name)
    checkpoints = sorted({key.rsplit("/", 1)[0] for key in mn_bucket.keys("two-nodes/runs/")
                          if "/checkpoints/" in key and key.endswith(f"/{MANIFEST}")})
    assert len(checkpoints) == 4, checkpoints  # steps 2 and 4 of both points (train.keep_checkpoints >= 2)
    for tag in checkpoints:
        assert json.loads(mn_bucket.read(f"{tag}/{MANIFEST}"))["world_size"] == 2, "one group of 2 ranks"
        ranks = {key.rsplit("/", 1)[1].split("_")[3] for key in mn_bucket.keys(f"{tag}/")
                 if key.rsplit("/", 1)[1].startswith("zero_pp_rank_")}
        assert ranks == {"0", "1"}, f"each node uploaded the shards of its rank to {tag}"
    one_node = _sweep(mn_bucket, prefect_home, "one-node", "cluster=local", "cluster.tasks_per_node=2")
    assert two_nodes.keys() == one_node.keys() == {"zero2", "zero3"}
    for stage, weights in two_nodes.items():
        reference = one_node[stage]
        assert weights.keys() == reference.keys()
        for name, tensor in weights.items():
            assert torch.equal(tensor, reference[name]), f"{stage}: {name} differs from the 1-node run"
