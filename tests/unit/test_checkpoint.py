"""Where a resume starts and how it loads: the committed manifest says which world size and ZeRO
stage wrote the shards; another world size goes through a universal checkpoint (ZeRO-1/2/3),
ZeRO-0 loads as saved, and a stage change is refused naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ito_core.checkpoint import ResumePoint, find_resume_point, own_weights, tag_for
from ito_core.storage import LocalStore, commit


def store_with(tmp_path: Path, **manifest: int) -> LocalStore:
    store = LocalStore(tmp_path)
    for step in (3, 6):
        Path(store.url(f"ck/{tag_for(step)}")).mkdir(parents=True)
    commit(store, f"ck/{tag_for(3)}", {"step": 3, **manifest})  # step 6: written but never committed
    return store


@pytest.mark.parametrize(("saved", "now", "universal"), [((2, 2), (2, 2), False), ((2, 2), (1, 2), True),
                                                         ((1, 3), (4, 3), True), ((2, 1), (1, 1), True),
                                                         ((2, 0), (1, 0), False)])
def test_resume_point(tmp_path: Path, saved: tuple[int, int], now: tuple[int, int], universal: bool) -> None:
    store = store_with(tmp_path, world_size=saved[0], zero_stage=saved[1])
    point = find_resume_point(store, "ck", world_size=now[0], zero_stage=now[1])
    assert point == ResumePoint(tag=tag_for(3), saved_world_size=saved[0], universal=universal)


def test_fresh_start_and_manifest_without_world_size(tmp_path: Path) -> None:
    assert find_resume_point(LocalStore(tmp_path / "empty"), "ck", world_size=2, zero_stage=2) is None
    point = find_resume_point(store_with(tmp_path), "ck", world_size=2, zero_stage=2)
    assert point is not None and not point.universal


def test_zero_stage_change_is_refused_with_the_fix(tmp_path: Path) -> None:
    store = store_with(tmp_path, world_size=2, zero_stage=2)
    with pytest.raises(ValueError, match=r"deepspeed.zero_stage.*stage 2.*deepspeed=zero2"):
        find_resume_point(store, "ck", world_size=2, zero_stage=3)


def zero3_param(numel: int, *, rank: int, partition: list[float]) -> torch.nn.Parameter:
    """A parameter as ZeRO-3 leaves it on ``rank``: empty, with this rank's partition in ``ds_tensor``."""
    param = torch.nn.Parameter(torch.empty(0))
    param.ds_numel, param.ds_zero_partition_rank = numel, rank
    param.ds_tensor = torch.tensor(partition)
    param.ds_tensor.ds_numel = len(partition)
    return param


def test_zero3_partition_padding_is_not_taken_for_weights() -> None:
    nan = float("nan")  # DeepSpeed's padding is torch.empty: whatever the memory held
    assert torch.equal(own_weights(zero3_param(3, rank=0, partition=[1.0, 2.0])), torch.tensor([1.0, 2.0]))
    assert torch.equal(own_weights(zero3_param(3, rank=1, partition=[3.0, nan])), torch.tensor([3.0]))
    assert own_weights(zero3_param(1, rank=1, partition=[nan])).numel() == 0, "a 1-element parameter on rank 1"
    plain = torch.ones(2)
    assert own_weights(plain) is plain
