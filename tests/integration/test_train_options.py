"""The training switches on a real DeepSpeed engine (one rank, in this process) and 2-rank gloo:

- gradient accumulation: accum=2 x micro=8 == accum=1 x micro=16 (loss and weights after a step);
  2 ranks x 2 micro-batches == 1 process with the global batch (every gradient);
- NaN/inf loss: skipped without an update, counted, stopped past the limit or at once (``stop``);
  a diverged state is never committed over the last good checkpoint;
- activation checkpointing (bitwise the same step), bf16, fp16's clear error on CPU, torch.compile;
- history rows with logit scale, throughput and MFU.

NaNs are injected by monkeypatching the objective: no test-only code in the loop.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from pathlib import Path

import deepspeed
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from fixtures.tiny_run import one_rank_group, tiny_config

from ito_core.accumulation import GradientAccumulation
from ito_core.checkpoint import committed_tags, tag_for
from ito_core.config import RunConfig, accumulation_steps
from ito_core.distributed import DistEnv, free_port
from ito_core.flops import PEAK_TFLOPS_ENV
from ito_core.losses import ItoObjective
from ito_core.methods import build_model, build_objective
from ito_core.storage import LocalStore
from ito_core.strip import consolidate
from ito_core.train import build_engine, check_precision, train, try_update

EOT = 49407


def fixed_batch(size: int = 16, views: int = 2, texts: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented-view-shaped images and EOT-terminated captions for the tiny model (32 px, 32 tokens)."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 49000, (size, texts, 32), generator=gen)
    tokens[..., 12] = EOT
    return torch.randn(size, views, 3, 32, 32, generator=gen), tokens


def full_params(engine) -> dict[str, torch.Tensor]:
    params = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values()), enabled=engine.zero_optimization_stage() == 3):
        return {name: p.detach().float().clone() for name, p in params.items()}


def one_step(cfg: RunConfig) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Losses of one optimizer step on the fixed batch and the weights after it."""
    with one_rank_group() as env:
        engine = build_engine(cfg, env)
        steps = accumulation_steps(cfg.train, env.world_size)
        objective = build_objective(cfg, engine.module, rank=env.rank, world_size=env.world_size)
        accum = GradientAccumulation(engine, objective, steps=steps)
        images, tokens = fixed_batch()
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[cfg.deepspeed.precision]
        losses = {k: v.item() for k, v in accum.forward(images.to(dtype), tokens).items()}
        accum.backward()
        assert engine.global_steps == 1 and engine.micro_steps == steps
        return losses, full_params(engine)


def options(tmp_path: Path, *overrides: str) -> RunConfig:
    return tiny_config(tmp_path, "cluster.tasks_per_node=1", *overrides)


# ------------------------------------------------------------------------------------ accumulation

def test_accumulation_matches_the_full_batch_in_deepspeed(tmp_path: Path) -> None:
    full_losses, full_weights = one_step(options(tmp_path, "train.micro_batch_size=16"))
    acc_losses, acc_weights = one_step(options(tmp_path, "train.micro_batch_size=8"))
    assert acc_losses == pytest.approx(full_losses, rel=1e-6)
    for name, weight in full_weights.items():
        torch.testing.assert_close(acc_weights[name], weight, rtol=1e-5, atol=1e-6, msg=name)


class SummingEngine:
    """DeepSpeed's gradient semantics without DeepSpeed: backward adds into .grad; the caller averages
    over ranks (DeepSpeed's data-parallel reduction)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.skipped_steps = model, 0

    def __call__(self, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(images, tokens)

    def backward(self, loss: torch.Tensor, scale_wrt_gas: bool = True) -> None:
        loss.backward()

    def step(self) -> None:
        pass


def accumulated_grads(cfg: RunConfig, env: DistEnv, images: torch.Tensor, tokens: torch.Tensor,
                      steps: int) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = build_model(cfg).double()
    objective = build_objective(cfg, model, rank=env.rank, world_size=env.world_size)
    accum = GradientAccumulation(SummingEngine(model), objective, steps=steps)
    loss = accum.forward(images.double(), tokens)["loss"].item()
    accum.backward()
    return loss, {name: p.grad for name, p in model.named_parameters()}


class RecordingAccumulation:
    """Records whether the loop asked for a backward pass or a skip."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def backward(self) -> bool:
        self.calls.append("backward")
        return True

    def skip(self) -> None:
        self.calls.append("skip")


def two_rank_worker(rank: int, port: int, cfg: RunConfig, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        images, tokens = fixed_batch(size=8)
        local = slice(4 * rank, 4 * rank + 4)
        grads = accumulated_grads(cfg, DistEnv(rank, rank, 2), images[local], tokens[local], steps=2)
        # Rank 1 alone sees a NaN loss: both ranks must skip.
        accum = RecordingAccumulation()
        problem = try_update(accum, {"loss": torch.tensor(float("nan") if rank else 1.0)}, precision="fp32")
        torch.save({"grads": grads, "nan": (problem, accum.calls)}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, list[dict]]:
    """Two gloo processes (no DeepSpeed): accumulated gradients and a NaN seen by rank 1 only."""
    tmp = tmp_path_factory.mktemp("two_ranks")
    cfg = options(tmp)
    mp.spawn(two_rank_worker, args=(free_port(), cfg, str(tmp)), nprocs=2, join=True)
    return cfg, [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_ranks_with_accumulation_match_one_process(two_ranks: tuple[RunConfig, list[dict]]) -> None:
    """2 ranks x 2 micro-batches of 2 == one process with the global batch of 8, for every gradient."""
    cfg, ranks = two_ranks
    ref_loss, ref_grads = accumulated_grads(cfg, DistEnv(0, 0, 1), *fixed_batch(size=8), steps=1)
    assert sum(r["grads"][0] for r in ranks) / 2 == pytest.approx(ref_loss, rel=1e-6)  # logits are float32
    for name, ref in ref_grads.items():
        grad = (ranks[0]["grads"][1][name] + ranks[1]["grads"][1][name]) / 2  # DeepSpeed averages over ranks
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-7, msg=name)


def test_a_nan_on_one_rank_skips_the_step_on_every_rank(two_ranks: tuple[RunConfig, list[dict]]) -> None:
    _, ranks = two_ranks
    assert [r["nan"] for r in ranks] == [("non-finite loss", ["skip"])] * 2


# ---------------------------------------------------------------------------------- NaN/inf policy

def poison(monkeypatch: pytest.MonkeyPatch, *, from_call: int, make: Callable[[dict], torch.Tensor]) -> None:
    """From the ``from_call``-th objective call on (one per step without accumulation), replace the
    total loss with ``make(model outputs, losses)``."""
    original, calls = ItoObjective.forward, itertools.count(1)

    def forward(self: ItoObjective, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        losses = original(self, out)
        if next(calls) >= from_call:
            losses["loss"] = make({"out": out, **losses})
        return losses

    monkeypatch.setattr(ItoObjective, "forward", forward)


def nan_loss(terms: dict) -> torch.Tensor:
    return terms["loss"] * float("nan")


def nan_gradient(terms: dict) -> torch.Tensor:
    """A finite loss whose gradient is NaN (0 * d sqrt(x)/dx at x = 0): the weights diverge, not the loss."""
    scale = terms["out"]["logit_scale"]
    return terms["loss"] + 0 * torch.sqrt(scale - scale.detach())


def run_training(cfg: RunConfig, shards: list[str]) -> dict:
    with one_rank_group():
        return train(cfg, shard_paths=shards, shard_samples=[32] * 3, store=LocalStore(cfg.storage.root), run_key="r",
                     staging=Path(cfg.cluster.work_dir) / "staging")


def nan_config(tmp_path: Path, *overrides: str) -> RunConfig:
    return options(tmp_path, "train.steps=4", "train.checkpoint_every=2", "train.log_every=1", *overrides)


def test_nonfinite_loss_is_skipped_on_all_ranks_without_an_update(
        tmp_path: Path, small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = nan_config(tmp_path, "train.nonfinite=skip", "train.max_skipped_steps=2")
    poison(monkeypatch, from_call=3, make=nan_loss)  # steps 3 and 4
    summary = run_training(cfg, small_shards)

    store, ckpts = LocalStore(cfg.storage.root), Path(cfg.storage.root) / "r/checkpoints"
    assert summary["step"] == 4 and committed_tags(store, "r/checkpoints") == [tag_for(2), tag_for(4)]
    rows = summary["history"]
    assert [row["skipped_steps"] for row in rows] == [0, 0, 1, 2]
    assert [row["lr"] for row in rows[1:]] == [rows[1]["lr"]] * 3  # the schedule did not move either
    at_2, at_4 = consolidate(ckpts, tag_for(2), zero_stage=2), consolidate(ckpts, tag_for(4), zero_stage=2)
    for name in at_2:
        assert torch.equal(at_2[name], at_4[name]), name
    states = torch.load(ckpts / tag_for(4) / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    assert states["global_steps"] == 2  # two optimizer steps for four batches
    assert store.read_json(f"r/checkpoints/{tag_for(4)}/manifest.json")["skipped_steps"] == 2


def test_too_many_skipped_steps_stop_and_keep_the_last_good_checkpoint(
        tmp_path: Path, small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = nan_config(tmp_path, "train.nonfinite=skip", "train.max_skipped_steps=1")
    poison(monkeypatch, from_call=3, make=nan_loss)
    with pytest.raises(FloatingPointError, match=r"step 4.*2 steps skipped.*train.max_skipped_steps=1"):
        run_training(cfg, small_shards)
    assert committed_tags(LocalStore(cfg.storage.root), "r/checkpoints") == [tag_for(2)]


def test_stop_policy_raises_at_the_first_nonfinite_loss(
        tmp_path: Path, small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = nan_config(tmp_path, "train.nonfinite=stop")
    poison(monkeypatch, from_call=3, make=nan_loss)
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 3 \(loss=nan.*train.nonfinite=stop"):
        run_training(cfg, small_shards)
    assert committed_tags(LocalStore(cfg.storage.root), "r/checkpoints") == [tag_for(2)]


def test_diverged_weights_are_never_committed(
        tmp_path: Path, small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ZeRO nothing checks gradients: NaN weights reach the save, which refuses them."""
    cfg = nan_config(tmp_path, "deepspeed=zero0")
    poison(monkeypatch, from_call=4, make=nan_gradient)  # step 4: finite loss, NaN update
    with pytest.raises(FloatingPointError, match=r"weights are not finite after step 4: not saving"):
        run_training(cfg, small_shards)
    assert committed_tags(LocalStore(cfg.storage.root), "r/checkpoints") == [tag_for(2)]
    assert not (Path(cfg.storage.root) / "r/checkpoints" / tag_for(4)).exists()


def test_nonfinite_gradients_skipped_by_zero_count_as_skipped_steps(
        tmp_path: Path, small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """ZeRO optimizers refuse non-finite gradients themselves; the policy sees it as a skipped step."""
    cfg = nan_config(tmp_path, "deepspeed=zero2", "train.nonfinite=stop")
    poison(monkeypatch, from_call=4, make=nan_gradient)
    with pytest.raises(FloatingPointError, match=r"non-finite gradients \(DeepSpeed skipped the update\) at step 4"):
        run_training(cfg, small_shards)
    assert committed_tags(LocalStore(cfg.storage.root), "r/checkpoints") == [tag_for(2)]


def test_history_rows_carry_logit_scale_throughput_and_mfu(
        tmp_path: Path, small_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PEAK_TFLOPS_ENV, "0.1")
    summary = run_training(options(tmp_path, "train.steps=2", "train.log_every=1", "train.micro_batch_size=8"),
                           small_shards)
    for row in summary["history"]:
        assert row["logit_scale"] == pytest.approx(1 / 0.07, rel=1e-2)  # CLIP's init, barely moved
        # present and positive; their arithmetic on the clock: unit/test_flops.py (no bound on a speed here)
        assert row["samples_per_s"] > 0 and row["mfu"] > 0


def test_cheap_views_replay_their_patches_in_the_engine(tmp_path: Path) -> None:
    """ito.patch_dropout + a lower-resolution second view on the real engine in bf16 with 2 micro-batches: each grad
    pass draws the patches of its no-grad pass, so the full-batch loss it backwards is the one that was logged."""
    cfg = options(tmp_path, "ito.fusion_image_tokens=cls", "ito.patch_dropout=0.5", "ito.second_view_size=16",
                  "deepspeed.precision=bf16", "train.micro_batch_size=8")
    backwarded = []

    def recording(objective: ItoObjective) -> Callable[[dict], dict]:
        def losses_of(out: dict) -> dict:
            losses = objective(out)
            backwarded.append(losses["loss"].item())
            return losses
        return losses_of

    with one_rank_group() as env:
        engine = build_engine(cfg, env)
        objective = build_objective(cfg, engine.module, rank=env.rank, world_size=env.world_size)
        accum = GradientAccumulation(engine, recording(objective), steps=2)
        images, tokens = fixed_batch()
        logged = accum.forward(images.to(torch.bfloat16), tokens)["loss"].item()
        assert accum.backward() and engine.global_steps == 1
        assert all(torch.isfinite(w).all() for w in full_params(engine).values())
    assert backwarded[1:] == pytest.approx([logged, logged], rel=1e-6) and len(backwarded) == 3


# ------------------------------------------------------------------------------ model switches

@pytest.mark.parametrize(("stage", "micro"), [(2, 16), (3, 8)])  # ZeRO-3 with 2 accumulation steps
def test_activation_checkpointing_gives_the_same_step(tmp_path: Path, stage: int, micro: int) -> None:
    run = (f"deepspeed=zero{stage}", f"train.micro_batch_size={micro}")
    plain_losses, plain_weights = one_step(options(tmp_path, *run))
    ckpt_losses, ckpt_weights = one_step(options(tmp_path, *run, "train.activation_checkpointing=true"))
    assert ckpt_losses == plain_losses
    for name, weight in plain_weights.items():
        assert torch.equal(ckpt_weights[name], weight), name


def test_bf16_step_is_close_to_fp32(tmp_path: Path) -> None:
    fp32_losses, _ = one_step(options(tmp_path))
    bf16_losses, bf16_weights = one_step(options(tmp_path, "deepspeed.precision=bf16"))
    assert bf16_losses["loss"] == pytest.approx(fp32_losses["loss"], rel=2e-2)
    assert all(torch.isfinite(w).all() for w in bf16_weights.values())


def test_fp16_names_the_key_where_the_accelerator_lacks_it() -> None:
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().is_fp16_supported():
        pytest.skip("this accelerator trains in fp16")
    with pytest.raises(ValueError, match=r"deepspeed.precision: 'fp16' is not supported.*use fp32 or bf16"):
        check_precision("fp16")


@pytest.mark.timeout(600)
def test_compiled_step_is_close_to_eager(tmp_path: Path) -> None:
    """torch.compile on CPU: inductor builds C++ kernels on the first step (about 2 minutes on 2
    cores, seconds once its cache under /tmp/torchinductor_$USER is warm); not bitwise eager."""
    eager_losses, eager_weights = one_step(options(tmp_path))
    compiled_losses, compiled_weights = one_step(options(tmp_path, "train.compile=true"))
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-5)
    for name, weight in eager_weights.items():
        torch.testing.assert_close(compiled_weights[name], weight, rtol=1e-4, atol=1e-5, msg=name)
