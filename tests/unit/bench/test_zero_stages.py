"""The communication projection of bench/zero_stages.py against values worked out by hand."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import ModuleType

import pytest


@pytest.fixture
def zero(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("zero_stages.py")


def test_zero_volumes_per_gpu(zero: ModuleType) -> None:
    # 1e9 bf16 parameters on 8 GPUs: ZeRO 0-2 send 2 x 7/8 x 2 GB = 3.5 GB per GPU, ZeRO 3 half as much again
    assert [zero.zero_passes(stage) for stage in (0, 1, 2, 3)] == [2, 2, 2, 3]
    assert zero.bytes_per_gpu(2e9, passes=zero.zero_passes(0), gpus=8) == pytest.approx(3.5e9)
    assert zero.bytes_per_gpu(2e9, passes=zero.zero_passes(3), gpus=8) == pytest.approx(5.25e9)
    assert zero.bytes_per_gpu(2e9, passes=2, gpus=1) == 0  # one GPU talks to nobody
    with pytest.raises(ValueError, match="ZeRO stage 4"):
        zero.zero_passes(4)


def test_feature_gather_grows_with_the_gpu_count(zero: ModuleType) -> None:
    # 128 samples x 512 dims x 2 features (image, text) x 2 bytes per GPU = 262,144 bytes; 8 GPUs gather 8 of them
    gathered = zero.gathered_feature_bytes(batch_per_gpu=128, dim=512, features=2, gpus=8, bytes_per_element=2)
    assert gathered == 8 * 262_144
    assert zero.bytes_per_gpu(gathered, passes=2, gpus=8) == 2 * 7 * 262_144  # all-gather + reduce-scatter
    at_512 = zero.gathered_feature_bytes(batch_per_gpu=128, dim=512, features=2, gpus=512, bytes_per_element=2)
    assert zero.bytes_per_gpu(at_512, passes=2, gpus=512) / zero.bytes_per_gpu(gathered, passes=2, gpus=8) == 73


def test_ring_time_inside_and_across_nodes(zero: ModuleType) -> None:
    links = zero.Links(gpus_per_node=8, nvlink_gbytes=100.0, node_gbit=400.0)  # 50 GB/s per node
    one_node = zero.ring_seconds(1e9, passes=2, gpus=8, links=links)
    assert one_node == pytest.approx(2 * 7 / 8 * 1e9 / 100e9)  # NVLink only
    four_nodes = zero.ring_seconds(1e9, passes=2, gpus=32, links=links)
    assert four_nodes == pytest.approx(one_node + 2 * 3 / 4 * 1e9 / 50e9)


def test_projection_rows_use_our_parameter_counts(zero: ModuleType) -> None:
    args = argparse.Namespace(gpus_per_node=8, nvlink_gbytes=360.0, node_gbit=400.0, batch_per_gpu=128, bytes=2,
                              peak_tflops=989.0, mfu=0.4)
    rows = {(r["model"], r["variant"], r["gpus"]): r for r in zero.projection(args, {"ViT-B/16": "vit_b_16"})}
    assert len(rows) == 2 * 3  # CLIP and ITO at 8, 64, 512 GPUs
    assert rows["ViT-B/16", "CLIP", 8]["params"] == 149_620_737  # as OpenCLIP's ViT-B-16
    b16 = rows["ViT-B/16", "CLIP", 64]
    assert b16["zero0_gb_per_gpu"] == pytest.approx(2 * 63 / 64 * 149_620_737 * 2 / 1e9)
    assert b16["zero3_gb_per_gpu"] == pytest.approx(1.5 * b16["zero0_gb_per_gpu"])
    ito = rows["ViT-B/16", "ITO M=2", 512]
    assert ito["features_per_sample"] == 2 + 1 + 2  # M image views + N captions + M x N fused
    assert ito["params"] > b16["params"]  # + the fusion module
