"""FLAIR's text-conditioned eval path: chunked scores == one pair at a time, the metrics == the suite's on the same
scores, the analytic FLOPs == torch's FLOP counter, records for a tiny model on real shards, and the suite reads
and encodes each set once for its own tasks and the text-conditioned ones together."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from fixtures.stripped_model import commit_model_folder
from fixtures.tiny_run import write_shapes_shards
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ito_core.config import RunConfig, load_config
from ito_core.eval import encode
from ito_core.eval import text_conditioned as tc
from ito_core.eval.retrieval import retrieval_metrics
from ito_core.eval.stage import run_eval
from ito_core.eval.suite import evaluate
from ito_core.methods import build_model
from ito_core.methods.flair import TextConditionedPool
from ito_core.models.dual_encoder import DualEncoder
from ito_core.prep import prepare
from ito_core.storage import LocalStore

NUM_SAMPLES = 24


def test_chunked_scores_equal_one_pair_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    pool = TextConditionedPool(8, 2).eval()
    patches_NPE, queries_QE = torch.randn(5, 3, 8), torch.randn(7, 8)
    monkeypatch.setattr(tc, "POOLED_FLOATS_PER_CHUNK", 2 * 3 * 8)  # 3 queries per chunk, 2 images per chunk
    with torch.no_grad():
        scores_NQ = tc.tc_scores(pool, patches_NPE, queries_QE, image_chunk=2)
        for i in range(5):
            for q in range(7):
                pooled_E = pool(queries_QE[q:q + 1], patches_NPE[i:i + 1])[0, 0]
                expected = F.cosine_similarity(pooled_E, queries_QE[q], dim=0)
                torch.testing.assert_close(scores_NQ[i, q], expected, rtol=1e-5, atol=1e-6)


def test_retrieval_metrics_from_scores_equal_the_suite_on_dot_products() -> None:
    gen = torch.Generator().manual_seed(1)
    images_ND, texts_TD = torch.randn(6, 4, generator=gen), torch.randn(13, 4, generator=gen)
    text_to_image_T = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 1, 3, 4])
    scores_NT = F.normalize(images_ND, dim=-1) @ F.normalize(texts_TD, dim=-1).T
    assert tc.tc_retrieval_metrics(scores_NT, text_to_image_T) == retrieval_metrics(images_ND, texts_TD,
                                                                                    text_to_image_T)


def test_analytic_flops_equal_torch_flop_counter() -> None:
    images, queries, patches, dim = 3, 5, 4, 16
    pool = TextConditionedPool(dim, 4).eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        tc.tc_scores(pool, torch.randn(images, patches, dim), torch.randn(queries, dim))
    flops = tc.tc_scoring_flops(images=images, queries=queries, patches=patches, dim=dim)
    # The counter sees matmuls only; the final per-pair dot product (2 E) is elementwise here.
    assert counter.get_total_flops() == flops["tc_flops"] - images * queries * 2 * dim
    assert flops["clip_flops"] == 2 * images * queries * dim


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_shapes_shards(tmp_path_factory.mktemp("tc_shapes"), "eval", num_samples=NUM_SAMPLES,
                               samples_per_shard=NUM_SAMPLES)


def tc_config() -> RunConfig:
    return load_config(["model=tiny", "eval.zero_shot=shapes", "eval.retrieval=shapes", "eval.linear_probe=shapes",
                        "eval.modality_gap=shapes", f"eval.max_samples={NUM_SAMPLES}", "eval.batch_size=10"])


def test_records_for_zero_shot_and_retrieval_only(shapes_shards: list[str]) -> None:
    cfg = tc_config()
    torch.manual_seed(0)
    model, pool = DualEncoder(cfg.model).eval(), TextConditionedPool(cfg.model.embed_dim, 8)
    records = evaluate(model, cfg, {"shapes": shapes_shards}, model_name="tiny", pretrained="runs/x/model",
                       extra_eval=tc.text_conditioned_eval(pool))
    tc_records = records[4:]  # after the suite's four
    assert [r["task"] for r in tc_records] == ["zeroshot_classification_tc", "zeroshot_retrieval_tc"]
    assert {"dataset": "shapes", "model": "tiny", "pretrained": "runs/x/model"}.items() <= tc_records[0].items()
    assert set(tc_records[0]["metrics"]) == {"tc_acc1", "tc_acc5", "tc_mean_per_class_recall"}
    assert {"tc_image_retrieval_recall@1", "tc_text_retrieval_recall@10"} <= set(tc_records[1]["metrics"])
    assert all(0.0 <= v <= 1.0 for r in tc_records for v in r["metrics"].values())


def test_each_set_is_read_and_encoded_once_for_the_suite_and_the_tc_path(
        shapes_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Before issue 24 the tc path read each set a second time and encoded its captions and class prompts again
    (2 reads, twice the suite's text-tower batches). Now: 1 read; the image tower runs once per batch for the
    suite's pooled features and once for the patch tokens (a full-token pass pools differently in the last bits,
    so the suite's numbers stay its own); captions and class prompts are encoded once."""
    cfg = tc_config()
    torch.manual_seed(0)
    model, pool = DualEncoder(cfg.model).eval(), TextConditionedPool(cfg.model.embed_dim, 8)
    counts: Counter[str] = Counter()
    real_reads = encode.iter_eval_batches
    monkeypatch.setattr(encode, "iter_eval_batches", lambda *a, **k: counts.update(["reads"]) or real_reads(*a, **k))
    model.visual.register_forward_hook(lambda *_: counts.update(["image batches"]))
    model.text.register_forward_hook(lambda *_: counts.update(["text batches"]))
    evaluate(model, cfg, {"shapes": shapes_shards}, model_name="tiny", pretrained="x")
    suite_only = dict(counts)
    counts.clear()
    evaluate(model, cfg, {"shapes": shapes_shards}, model_name="tiny", pretrained="x",
             extra_eval=tc.text_conditioned_eval(pool))
    image_batches = -(-NUM_SAMPLES // cfg.eval.batch_size)
    assert suite_only["reads"] == counts["reads"] == 1
    assert (suite_only["image batches"], counts["image batches"]) == (image_batches, 2 * image_batches)
    assert counts["text batches"] == suite_only["text batches"]  # captions and class prompts: not again


def test_the_eval_stage_adds_tc_records_when_the_model_folder_has_the_pooler(tmp_path: Path) -> None:
    """A FLAIR model folder as strip writes it (dual encoder + flair_pool.safetensors): the stage scores it both
    ways, and the model card lists both. (A folder without the pooler gets the suite's records only:
    tests/unit/eval/test_user_sets.py.)"""
    cfg = load_config(["model=tiny", "method=flair", "data.image_size=32", "data.sources=[shapes]",
                       "data.shapes_train=8", "data.shapes_eval=12", f"storage.root={tmp_path / 'store'}",
                       f"cluster.work_dir={tmp_path / 'work'}", "eval.zero_shot=shapes", "eval.retrieval=shapes",
                       "eval.linear_probe=", "eval.modality_gap=", "eval.batch_size=5"])
    store = LocalStore(cfg.storage.root)
    keys = prepare(cfg.data, cfg.eval, store)
    torch.manual_seed(0)
    commit_model_folder(store, cfg, build_model(cfg).state_dict(), run_key="runs/flair", steps=0)

    records = run_eval(cfg, store=store, run_key="runs/flair", data_keys=keys, staging=tmp_path / "staging")

    assert [r["task"] for r in records] == ["zeroshot_classification", "zeroshot_retrieval",
                                            "zeroshot_classification_tc", "zeroshot_retrieval_tc"]
    card = (Path(store.url("runs/flair")) / "model" / "README.md").read_text()
    assert "| shapes (in-distribution) | zeroshot_retrieval_tc | tc_image_retrieval_recall@1" in card
