"""The eval stage on a tiny random model: each set is read and encoded once, every task gets a CLIP_benchmark
record, the UMAP plot is written, and missing or bad eval data fails with a clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures.tiny_run import write_shapes_shards

from ito_core.config import RunConfig, load_config
from ito_core.eval import encode, suite
from ito_core.eval.plots import plot_modality_umap
from ito_core.models.dual_encoder import DualEncoder

NUM_SAMPLES = 48
ALL_ON_SHAPES = ["eval.zero_shot=shapes", "eval.retrieval=shapes", "eval.linear_probe=shapes",
                 "eval.modality_gap=shapes", f"eval.max_samples={NUM_SAMPLES}", "eval.batch_size=20",
                 "eval.probe_c_grid=[1.0,100.0]", "eval.umap_points=30"]


@pytest.fixture(scope="module")
def shapes_shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_shapes_shards(tmp_path_factory.mktemp("eval_shapes"), "eval", num_samples=NUM_SAMPLES,
                               samples_per_shard=NUM_SAMPLES)


def tiny_model(cfg: RunConfig) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(cfg.model).eval()


def counted(fn: Any, calls: list[int]) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[0]) if args and hasattr(args[0], "__len__") else 0)
        return fn(*args, **kwargs)
    return wrapper


def test_features_are_computed_once_per_set_and_shared_by_every_task(
        shapes_shards: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(["model=tiny", *ALL_ON_SHAPES])
    model, reads, image_batches = tiny_model(cfg), [], []
    monkeypatch.setattr(encode, "iter_eval_batches", counted(encode.iter_eval_batches, reads))
    model.encode_image = counted(model.encode_image, image_batches)  # type: ignore[method-assign]
    records = suite.evaluate(model, cfg, {"shapes": shapes_shards}, model_name="tiny", pretrained="runs/x/model")

    assert len(reads) == 1 and image_batches == [20, 20, 8]  # one pass over the 48 images
    assert [r["task"] for r in records] == ["zeroshot_classification", "zeroshot_retrieval", "linear_probe",
                                            "modality_gap"]
    for record in records:
        assert {"dataset": "shapes", "model": "tiny", "pretrained": "runs/x/model"}.items() <= record.items()
        assert all(isinstance(v, float) for v in record["metrics"].values())
    assert set(records[0]["metrics"]) == {"acc1", "acc5", "mean_per_class_recall"}
    assert "image_retrieval_recall@5" in records[1]["metrics"]
    assert {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall", "lp_C"} <= set(records[2]["metrics"])
    assert {"centroid_distance", "alignment", "matched_pair_cosine", "random_pair_cosine"} <= set(records[3]["metrics"])
    assert "plots" not in records[3]  # no plot_dir given
    summary = suite.summary_metrics(records)
    assert {"shapes/acc1", "shapes/lp_acc1", "shapes/centroid_distance"} <= set(summary)


def test_eval_plan_groups_tasks_by_set() -> None:
    cfg = load_config([])
    assert suite.eval_plan(cfg.eval) == {"fashion_mnist": ["zeroshot_classification", "linear_probe"],
                                         "tuxpaint": ["zeroshot_classification", "zeroshot_retrieval"],
                                         "shapes_heldout": ["zeroshot_classification"],
                                         "shapes": ["zeroshot_retrieval", "modality_gap"]}
    cfg = load_config(["eval.linear_probe=", "eval.modality_gap=", "eval.retrieval=", "eval.zero_shot=fashion_mnist"])
    assert suite.eval_plan(cfg.eval) == {"fashion_mnist": ["zeroshot_classification"]}
    cfg = load_config(["eval.linear_probe=[]", "eval.modality_gap=", "eval.retrieval=[shapes,tuxpaint]",
                       "eval.zero_shot=[tuxpaint]"])
    assert suite.eval_plan(cfg.eval) == {"tuxpaint": ["zeroshot_classification", "zeroshot_retrieval"],
                                         "shapes": ["zeroshot_retrieval"]}


def test_in_distribution_marks_sets_drawn_from_a_training_source() -> None:
    cfg = load_config([])
    flags = {name: suite.in_distribution(name, cfg) for name in ("fashion_mnist", "shapes", "shapes_heldout",
                                                                  "tuxpaint", "my_imagenet")}
    assert flags == {"fashion_mnist": True, "shapes": True, "shapes_heldout": False, "tuxpaint": False,
                     "my_imagenet": False}
    assert not suite.in_distribution("fashion_mnist", load_config(["data.sources=[shapes,openclipart]"]))
    records = [{"dataset": "fashion_mnist", "in_distribution": True, "metrics": {"acc1": 0.5, "acc5": 0.9}},
               {"dataset": "tuxpaint", "in_distribution": False, "metrics": {"acc1": 0.1}},
               {"dataset": "old", "metrics": {"acc1": 0.2}}]
    assert suite.summary_in_distribution(records) == {"fashion_mnist/acc1": True, "fashion_mnist/acc5": True,
                                                      "tuxpaint/acc1": False, "old/acc1": False}


def test_missing_eval_data_names_the_config_keys(shapes_shards: list[str]) -> None:
    cfg = load_config(["model=tiny"])  # fashion_mnist is configured but not prepared
    match = r"'fashion_mnist': \['zero_shot', 'linear_probe'\].*prepared sets: \['shapes'\]"
    with pytest.raises(ValueError, match=match):
        suite.evaluate(tiny_model(cfg), cfg, {"shapes": shapes_shards}, model_name="tiny", pretrained="x")


def test_empty_eval_shards_fail_clearly(tmp_path: Path) -> None:
    cfg = load_config(["model=tiny", *ALL_ON_SHAPES])
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"\0" * 1024)  # an empty tar archive
    with pytest.raises(ValueError, match="no eval samples"):
        suite.evaluate(tiny_model(cfg), cfg, {"shapes": [str(empty)]}, model_name="tiny", pretrained="x")


@pytest.mark.parametrize(("override", "key"), [
    ("eval.probe_val_fraction=0.6", "eval.probe_val_fraction"),
    ("eval.probe_c_grid=[]", "eval.probe_c_grid"),
    ("eval.umap_points=-1", "eval.umap_points"),
])
def test_impossible_eval_settings_name_the_key(override: str, key: str) -> None:
    cfg = load_config(["model=tiny", override])
    with pytest.raises(ValueError, match=key):
        suite.check_eval_config(cfg.eval)


def test_umap_plot_refuses_too_few_points(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="UMAP plot needs >= 4"):
        plot_modality_umap(torch.eye(3), torch.eye(8), tmp_path / "u.png")


@pytest.mark.slow  # UMAP's first fit JIT-compiles numba code: ~10 s
def test_modality_gap_record_links_its_umap_png(shapes_shards: list[str], tmp_path: Path) -> None:
    cfg = load_config(["model=tiny", *ALL_ON_SHAPES, "eval.zero_shot=", "eval.retrieval=", "eval.linear_probe="])
    records = suite.evaluate(tiny_model(cfg), cfg, {"shapes": shapes_shards}, model_name="tiny", pretrained="x",
                             plot_dir=tmp_path / "plots")
    assert [r["task"] for r in records] == ["modality_gap"]
    png = tmp_path / "plots" / records[0]["plots"]["umap"]
    assert png.name == "umap-shapes.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5_000
    assert suite.summary_plots(records) == {"shapes/umap": "umap-shapes.png"}


def test_caption_ids_are_equal_exactly_when_the_tokens_are() -> None:
    reader = encode.EvalSetReader([], load_config(["model=tiny"]))
    reader.captions = [["A red circle.", "a  red   circle."], ["a red circle"], ["A red circle."]]
    ids = reader.text_ids_T().tolist()
    assert ids[0] == ids[1] == ids[3] != ids[2]  # case and spacing fold away; the full stop is a token
