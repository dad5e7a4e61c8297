"""bench/checkpoint_io.py: the checkpoint it transfers has DeepSpeed's layout and ViT-B/16's sizes, and one node's
share is what ``ito_core.checkpoint.needed_by`` selects for its ranks (its speed is the benchmark's to measure)."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from ito_core.checkpoint import needed_by


def test_a_b16_zero2_checkpoint_of_2_nodes_x_8_ranks(load_bench: Callable[[str], ModuleType]) -> None:
    bench = load_bench("checkpoint_io.py")
    files = bench.checkpoint_files(1.0)
    assert len(files) == 1 + 16
    assert files["mp_rank_00_model_states.pt"] == 149_620_737 * 2  # bf16 weights
    assert sum(files.values()) == 149_620_737 * 2 + 16 * int(149_620_737 * 12 / 16)  # + fp32 master + 2 moments
    node0 = [name for name in files if needed_by(set(range(8)))(name)]
    assert sorted(node0) == sorted(["mp_rank_00_model_states.pt",
                                    *(f"bf16_zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(8))])
    assert not needed_by({0})("bf16_zero_pp_rank_10_mp_rank_00_optim_states.pt"), "rank 10 is not rank 1 or 0"
