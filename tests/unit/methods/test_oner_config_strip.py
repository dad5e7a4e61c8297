"""method=oner: its config group, its validation, and strip -> load_stripped of the single tower."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch

from ito_core.config import load_config
from ito_core.export import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from ito_core.methods import build_model, build_objective
from ito_core.methods.oner.model import OneRModel, OneTower
from ito_core.model_folder import MODEL_CARD, MODEL_CONFIG, WEIGHTS, load_stripped, write_model_folder
from ito_core.models.dual_encoder import DualEncoder
from ito_core.strip import encoder_state

BASE = ["model=tiny", "method=oner"]
MANIFEST = {"checkpoint": "step-3", "num_parameters": 1, "dropped_parameters": 0, "steps": 3, "final_loss": 4.2,
            "data_key": "data/train-abc", "data_manifest_sha256": "f" * 64,
            "source_checkpoint": "/store/runs/a/checkpoints/step-3"}


def test_method_oner_defaults_are_the_schemas():
    cfg = load_config(BASE)
    assert (cfg.method.name, cfg.ito.images, cfg.ito.texts, cfg.ito.fusion, cfg.loss.name) == ("oner", 1, 1, "none",
                                                                                               "clip")
    for f in fields(type(cfg.method)):
        if f.name.startswith("oner_"):
            assert getattr(cfg.method, f.name) == f.default == 1.0, f.name


@pytest.mark.parametrize(("overrides", "key"), [
    (["ito.images=2"], "ito.images"),
    (["ito.texts=2"], "ito.texts"),
    (["ito.fusion=transformer", "ito.fusion_weight=1.0", "ito.images=1", "ito.texts=1"], "ito.fusion"),
    (["loss=siglip"], "loss.name"),
    (["method.oner_cic_weight=-1"], "method.oner_cic_weight"),
    (["method.oner_itc_weight=0", "method.oner_xmc_weight=0", "method.oner_cic_weight=0",
      "method.oner_cmc_weight=0"], r"method.oner_\*_weight"),
    (["train.batch_size=2"], "train.batch_size"),
])
def test_impossible_oner_settings_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        load_config([*BASE, *overrides])


def test_builders_skip_the_joint_passes_of_unweighted_losses():
    cfg = load_config([*BASE, "method.oner_cic_weight=0"])
    model = build_model(cfg)
    assert isinstance(model, OneRModel) and (model.cic, model.cmc) == (False, True)
    assert build_objective(cfg, model, rank=0, world_size=1).weights == {"itc": 1.0, "xmc": 1.0, "cic": 0.0,
                                                                          "cmc": 1.0}


def test_strip_round_trip_builds_the_single_tower(tmp_path):
    cfg = load_config(BASE)
    torch.manual_seed(0)
    full = build_model(cfg).state_dict()
    state = encoder_state(full)
    assert len(state) == len(full)  # nothing training-only to drop
    write_model_folder(state, cfg, tmp_path, {**MANIFEST, "num_parameters": sum(v.numel() for v in state.values())})
    assert json.loads((tmp_path / MODEL_CONFIG).read_text())["architecture"] == "one_tower"
    assert not (tmp_path / OPEN_CLIP_WEIGHTS).exists() and not (tmp_path / OPEN_CLIP_CONFIG).exists()
    card = (tmp_path / MODEL_CARD).read_text()
    assert "No OpenCLIP export" in card and "OneR" in card
    loaded = load_stripped(tmp_path)
    assert isinstance(loaded, OneTower) and not loaded.training
    assert loaded.state_dict().keys() == state.keys()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key]), key
    images, tokens = torch.randn(2, 3, 32, 32), torch.tensor([[49406, 320, 49407] + [0] * 29] * 2)
    reference = OneTower(cfg.model)
    reference.load_state_dict(state)
    torch.testing.assert_close(loaded.encode_image(images), reference.encode_image(images), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encode_text(tokens), reference.encode_text(tokens), rtol=0, atol=0)


def test_dual_encoder_folders_without_an_architecture_field_still_load(tmp_path):
    cfg = load_config(["model=tiny"])
    torch.manual_seed(0)
    state = DualEncoder(cfg.model).state_dict()
    write_model_folder(state, cfg, tmp_path, MANIFEST)
    spec = json.loads((tmp_path / MODEL_CONFIG).read_text())
    assert spec.pop("architecture") == "dual_encoder" and (tmp_path / OPEN_CLIP_WEIGHTS).exists()
    (tmp_path / MODEL_CONFIG).write_text(json.dumps(spec))
    assert isinstance(load_stripped(tmp_path), DualEncoder)
    spec["architecture"] = "two_towers_and_a_bridge"
    (tmp_path / MODEL_CONFIG).write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="architecture"):
        load_stripped(tmp_path)
    assert (tmp_path / WEIGHTS).exists()


def test_method_oner_names_its_own_runs():
    """method=oner shares clip's ito/loss groups; its run key must still differ (else the CLI would find clip's
    committed run and skip training), while the ITO family keeps the keys it had before `method` existed."""
    from ito_core.artifacts import run_key

    clip, oner = run_key(load_config(["model=tiny", "method=clip"])), run_key(load_config(BASE))
    assert clip != oner != run_key(load_config([*BASE, "method.oner_cmc_weight=0.5"]))
    assert clip == run_key(load_config(["model=tiny", "ito=clip", "loss=clip"]))
