"""The training keys: global = micro x ranks x accumulation, precision, NaN policy; DeepSpeed's config from them."""

from __future__ import annotations

import pytest

from ito_core.config import TrainConfig, accumulation_steps, load_config
from ito_core.train import deepspeed_config


@pytest.mark.parametrize(("batch", "micro", "world", "accum"), [(16, 0, 1, 1), (16, 8, 1, 2), (16, 8, 2, 1),
                                                                 (16, 2, 2, 4), (128, 16, 4, 2)])
def test_accumulation_steps(batch: int, micro: int, world: int, accum: int) -> None:
    assert accumulation_steps(TrainConfig(batch_size=batch, micro_batch_size=micro), world) == accum


def test_deepspeed_config_follows_the_training_keys() -> None:
    cfg = load_config(["train.batch_size=32", "train.micro_batch_size=4", "deepspeed.precision=bf16",
                       "cluster.tasks_per_node=2"])
    ds = deepspeed_config(cfg, world_size=2)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"]) == (
        32, 4, 4)
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert ds["checkpoint"] == {"load_universal": False}
    assert deepspeed_config(cfg, world_size=1, load_universal=True)["gradient_accumulation_steps"] == 8
    assert deepspeed_config(load_config(["deepspeed.precision=fp16"]), world_size=1)["fp16"] == {"enabled": True}


@pytest.mark.parametrize(("overrides", "key", "hint"), [
    (["train.micro_batch_size=5"], "train.micro_batch_size", "divisor of the per-rank batch"),
    (["train.micro_batch_size=-1"], "train.micro_batch_size", "divisor"),
    (["train.batch_size=32", "cluster.tasks_per_node=2", "train.micro_batch_size=32"], "train.micro_batch_size",
     "per-rank batch 16"),
    (["deepspeed.precision=fp8"], "deepspeed.precision", "'bf16'"),
    (["train.nonfinite=ignore"], "train.nonfinite", "'skip'"),
    (["train.max_skipped_steps=-1"], "train.max_skipped_steps", ">= 0"),
    (["train.grad_clip=-1"], "train.grad_clip", "0 to disable"),
    (["train.peak_tflops=-1"], "train.peak_tflops", "peak"),
])
def test_impossible_training_values_name_key_and_fix(overrides: list[str], key: str, hint: str) -> None:
    with pytest.raises(ValueError) as err:
        load_config(overrides)
    assert key in str(err.value) and hint in str(err.value)
