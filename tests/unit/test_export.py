"""OpenCLIP export without open_clip: the adapter yields exactly open_clip 3.3.0's keys and shapes (golden recorded
from the real library by tests/integration/test_export_openclip.py), round-trips bit-exactly, and the stripped model
folder (ours + OpenCLIP layout + tokenizer spec + model card) loads back to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ito_core.config import RunConfig, load_config
from ito_core.export import (
    OPEN_CLIP_CONFIG,
    OpenClipStateDictAdapter,
    load_open_clip_export,
    model_config_from_open_clip,
    open_clip_model_config,
)
from ito_core.model_folder import MODEL_CARD, TOKENIZER_SPEC, load_stripped, write_model_card, write_model_folder
from ito_core.models.dual_encoder import DualEncoder
from ito_core.storage import LocalStore, commit

GOLDEN = json.loads((Path(__file__).parents[1] / "golden" / "open_clip_3.3.0_tiny_state_dict.json").read_text())
# open_clip v3.3.0 src/open_clip/model_configs/ViT-B-16.json, with CLIPVisionCfg/CLIPTextCfg's defaults for the
# fields it leaves out (head_width 64, mlp_ratio 4.0).
OPEN_CLIP_VIT_B_16 = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16, "head_width": 64, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12, "mlp_ratio": 4.0},
}
MANIFEST = {"checkpoint": "step-6", "num_parameters": 3386113, "dropped_parameters": 1234, "steps": 6,
            "final_loss": 3.21, "data_key": "data/train-abc", "data_manifest_sha256": "f" * 64,
            "source_checkpoint": "/store/runs/a/checkpoints/step-6"}


@pytest.fixture(scope="module")
def cfg() -> RunConfig:
    return load_config(["model=tiny"])


def tiny_state(cfg: RunConfig, logit_bias: float | None = None) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return DualEncoder(cfg.model, logit_bias=logit_bias).state_dict()


@pytest.mark.parametrize(("golden", "logit_bias"), [("tiny", None), ("tiny_logit_bias", -10.0)])
def test_adapter_gives_exactly_open_clips_keys_and_shapes(
        cfg: RunConfig, golden: str, logit_bias: float | None) -> None:
    state = tiny_state(cfg, logit_bias)
    open_clip_state = OpenClipStateDictAdapter().to_open_clip(state)
    assert {k: list(v.shape) for k, v in open_clip_state.items()} == GOLDEN["models"][golden]["state_dict"]
    assert sum(v.numel() for v in open_clip_state.values()) == GOLDEN["models"][golden]["num_parameters"]
    assert open_clip_model_config(cfg.model, logit_bias=logit_bias) == GOLDEN["models"][golden]["model_cfg"]


@pytest.mark.parametrize("logit_bias", [None, -10.0])
def test_round_trip_is_bit_exact(cfg: RunConfig, logit_bias: float | None) -> None:
    adapter = OpenClipStateDictAdapter()
    state = tiny_state(cfg, logit_bias)
    back = adapter.from_open_clip(adapter.to_open_clip(state))
    assert list(back) == list(state)
    for key, value in state.items():
        assert back[key].shape == value.shape and torch.equal(back[key], value), key


def test_vit_b_16_config_is_open_clips() -> None:
    model = load_config(["model=vit_b_16"]).model
    assert open_clip_model_config(model) == OPEN_CLIP_VIT_B_16
    assert model_config_from_open_clip(OPEN_CLIP_VIT_B_16, name=model.name) == model


def test_foreign_keys_are_refused(cfg: RunConfig) -> None:
    adapter = OpenClipStateDictAdapter()
    with pytest.raises(ValueError, match="fusion.norm.weight.*stripped"):
        adapter.to_open_clip({**tiny_state(cfg), "fusion.norm.weight": torch.ones(2)})
    with pytest.raises(ValueError, match="attn_pool"):
        adapter.from_open_clip({"attn_pool.query": torch.ones(2)})


@pytest.mark.parametrize("change", [{"quick_gelu": True}, {"vision_cfg": {"width": 64, "ls_init_value": 0.1}}])
def test_open_clip_options_we_do_not_implement_are_refused(change: dict) -> None:
    with pytest.raises(ValueError, match="does not implement"):
        model_config_from_open_clip({**OPEN_CLIP_VIT_B_16, **change})


def test_model_folder_loads_back_both_ways(cfg: RunConfig, tmp_path: Path) -> None:
    state = tiny_state(cfg, logit_bias=-10.0)
    write_model_folder(state, cfg, tmp_path, MANIFEST)
    open_clip_config = json.loads((tmp_path / OPEN_CLIP_CONFIG).read_text())
    assert open_clip_config["preprocess_cfg"]["size"] == cfg.model.image_size
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(1, 1000, (2, cfg.model.context_length), generator=torch.Generator().manual_seed(0))
    source = DualEncoder(cfg.model, logit_bias=-10.0).eval()
    source.load_state_dict(state)
    with torch.no_grad():
        for loaded in (load_stripped(tmp_path), load_open_clip_export(tmp_path)):
            assert torch.equal(loaded.encode_image(images), source.encode_image(images))
            assert torch.equal(loaded.encode_text(tokens), source.encode_text(tokens))
            assert torch.equal(loaded.logit_bias, source.logit_bias)
    spec = json.loads((tmp_path / TOKENIZER_SPEC).read_text())
    assert spec["kind"] == "clip_bpe" and spec["context_length"] == cfg.model.context_length
    assert (spec["vocab_size"], spec["sot_token_id"], spec["eot_token_id"]) == (49408, 49406, 49407)


def test_model_card_has_config_data_hash_steps_and_later_the_eval_summary(cfg: RunConfig, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    model_dir = Path(store.url("runs/a/model"))
    model_dir.mkdir(parents=True)
    write_model_folder(tiny_state(cfg), cfg, model_dir, MANIFEST)
    commit(store, "runs/a/model", MANIFEST)
    card = (model_dir / MODEL_CARD).read_text()
    assert "| training steps | 6 |" in card and "f" * 64 in card and "data/train-abc" in card
    assert "3,386,113 parameters" in card and "fusion: transformer" in card and "Not evaluated yet" in card

    records = [{"dataset": "shapes", "task": "modality_gap", "metrics": {"centroid_distance": 0.51234},
                "plots": {"umap": "umap-shapes.png"}}]
    write_model_card(cfg, store=store, run_key="runs/a", records=records)
    card = (model_dir / MODEL_CARD).read_text()
    assert "| shapes | modality_gap | centroid_distance 0.5123 ([umap](../eval/umap-shapes.png)) |" in card
    assert "Not evaluated yet" not in card
