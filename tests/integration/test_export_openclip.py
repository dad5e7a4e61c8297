"""Parity with real OpenCLIP: our OpenCLIP-layout export loads in open_clip 3.3.0 and embeds like our model.

open_clip cannot live in the project venv (it needs torchvision, whose PyPI build fails beside the CPU torch), so
these tests run the peer side in a separate venv and skip unless ``ITO_OPEN_CLIP_PYTHON`` names its python:

    python3.11 -m venv /tmp/ocvenv
    /tmp/ocvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 && /tmp/ocvenv/bin/pip install open_clip_torch==3.3.0
    ITO_OPEN_CLIP_PYTHON=/tmp/ocvenv/bin/python pytest tests/integration/test_export_openclip.py

The golden key list used by the CI test ``tests/unit/test_export.py`` (no open_clip needed) is checked against
the real open_clip here; ``ITO_UPDATE_GOLDEN=1`` rewrites it from the peer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ito_core.config import load_config
from ito_core.data.tokenizer import build_tokenizer
from ito_core.export import open_clip_model_config
from ito_core.model_folder import write_model_folder
from ito_core.models.dual_encoder import DualEncoder

GOLDEN = Path(__file__).parents[1] / "golden" / "open_clip_3.3.0_tiny_state_dict.json"
PEER_PYTHON = os.environ.get("ITO_OPEN_CLIP_PYTHON", "")
TOLERANCE = 1e-5  # max abs difference of fp32 CPU embeddings (different torch builds and attention kernels)
CAPTIONS = ["a red circle above a blue square", "two small stars", "a photo of a sandal.", "Ankle boot!"]

pytestmark = pytest.mark.skipif(
    not PEER_PYTHON, reason="set ITO_OPEN_CLIP_PYTHON to a python with open_clip_torch==3.3.0 (see module docstring)")

# The peer side runs under the OpenCLIP venv's python and imports no ito_core.
PEER_SCRIPT = r'''
import json, sys, tempfile
from pathlib import Path
import open_clip, torch
from safetensors.torch import load_file, save_file

def golden(configs_path, out_path):
    out = {"open_clip_version": open_clip.__version__, "models": {}}
    for name, model_cfg in json.loads(Path(configs_path).read_text()).items():
        model = open_clip.model.CLIP(**model_cfg)
        out["models"][name] = {"model_cfg": model_cfg, "num_parameters": sum(p.numel() for p in model.parameters()),
                               "state_dict": {k: list(v.shape) for k, v in model.state_dict().items()}}
    Path(out_path).write_text(json.dumps(out))

def embed(model_dir, inputs_path, captions_path, out_path):
    """Load the export two ways: create_model("local-dir:DIR"), and a registered config + create_model(name,
    pretrained=None) + load_state_dict(strict=True); embed the fixed inputs with both."""
    inputs = load_file(inputs_path)
    with tempfile.TemporaryDirectory() as tmp:
        config = json.loads((Path(model_dir) / "open_clip_config.json").read_text())
        (Path(tmp) / "ito-export.json").write_text(json.dumps(config["model_cfg"]))
        open_clip.add_model_config(Path(tmp) / "ito-export.json")
    by_name = open_clip.create_model("ito-export", pretrained=None)
    by_name.load_state_dict(load_file(str(Path(model_dir) / "open_clip_model.safetensors")), strict=True)
    outputs = {}
    for name, model in {"local_dir": open_clip.create_model(f"local-dir:{model_dir}"), "by_name": by_name}.items():
        with torch.no_grad():
            model.eval()
            outputs[f"{name}.image"] = model.encode_image(inputs["images"])
            outputs[f"{name}.text"] = model.encode_text(inputs["tokens"])
            outputs[f"{name}.logit_scale"] = model.logit_scale.detach().clone()
            if model.logit_bias is not None:
                outputs[f"{name}.logit_bias"] = model.logit_bias.detach().clone()
    outputs["tokens"] = open_clip.get_tokenizer(f"local-dir:{model_dir}")(json.loads(Path(captions_path).read_text()))
    save_file({k: v.contiguous() for k, v in outputs.items()}, out_path)

{"golden": golden, "embed": embed}[sys.argv[1]](*sys.argv[2:])
'''


def run_peer(tmp_path: Path, *args: str) -> None:
    script = tmp_path / "open_clip_peer.py"
    script.write_text(PEER_SCRIPT)
    proc = subprocess.run([PEER_PYTHON, str(script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_open_clip_keys_and_shapes_equal_the_golden(tmp_path: Path) -> None:
    model = load_config(["model=tiny"]).model
    configs = {"tiny": open_clip_model_config(model),
               "tiny_logit_bias": open_clip_model_config(model, logit_bias=-10.0)}
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    run_peer(tmp_path, "golden", str(tmp_path / "configs.json"), str(tmp_path / "golden.json"))
    real = json.loads((tmp_path / "golden.json").read_text())
    if os.environ.get("ITO_UPDATE_GOLDEN") == "1":
        text = json.dumps(real, indent=1)  # one line per key: shapes collapsed
        GOLDEN.write_text(re.sub(r"\[[\d,\s]*\]", lambda m: json.dumps(json.loads(m.group())), text) + "\n")
    assert real == json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("logit_bias", [None, -10.0])
def test_export_loads_in_open_clip_and_embeds_like_ours(tmp_path: Path, logit_bias: float | None) -> None:
    cfg = load_config(["model=tiny"])
    torch.manual_seed(0)
    model = DualEncoder(cfg.model, logit_bias=logit_bias).eval()
    with torch.no_grad():  # LayerNorms away from their (1, 0) init, so a swapped weight/bias would show
        for name, param in model.named_parameters():
            if "ln_" in name:
                param.add_(0.1 * torch.randn_like(param))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    manifest = {"num_parameters": 0, "dropped_parameters": 0, "steps": 0, "final_loss": None, "data_key": "-",
                "data_manifest_sha256": "-", "source_checkpoint": "-"}
    write_model_folder(state, cfg, tmp_path / "model", manifest)

    images = torch.randn(4, 3, cfg.model.image_size, cfg.model.image_size, generator=torch.Generator().manual_seed(1))
    tokens = build_tokenizer(cfg.model.context_length)(CAPTIONS)
    save_file({"images": images, "tokens": tokens}, str(tmp_path / "inputs.safetensors"))
    (tmp_path / "captions.json").write_text(json.dumps(CAPTIONS))
    run_peer(tmp_path, "embed", str(tmp_path / "model"), str(tmp_path / "inputs.safetensors"),
             str(tmp_path / "captions.json"), str(tmp_path / "out.safetensors"))
    peer = load_file(str(tmp_path / "out.safetensors"))

    with torch.no_grad():
        ours_image, ours_text = model.encode_image(images), model.encode_text(tokens)
    assert torch.equal(peer["tokens"], tokens)  # open_clip's tokenizer for the folder gives our ids
    for loader in ("local_dir", "by_name"):
        image_diff = (peer[f"{loader}.image"] - ours_image).abs().max().item()
        text_diff = (peer[f"{loader}.text"] - ours_text).abs().max().item()
        print(f"{loader} logit_bias={logit_bias}: max abs diff image {image_diff:.2e}, text {text_diff:.2e}")
        assert image_diff < TOLERANCE and text_diff < TOLERANCE
        assert peer[f"{loader}.logit_scale"].shape == () and peer[f"{loader}.logit_scale"] == model.logit_scale[0]
        if logit_bias is not None:
            assert peer[f"{loader}.logit_bias"].shape == () and peer[f"{loader}.logit_bias"] == model.logit_bias[0]
