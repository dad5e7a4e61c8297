"""bench/train_step.py: its argument checks, the caption generator, and a tiny bf16 run on CPU without the peer
(its figures' arithmetic: test_step_report.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
import torch

from ito_core.data.tokenizer import build_tokenizer, trim_padding

BENCH = Path(__file__).resolve().parents[3] / "bench"


@pytest.fixture
def ts(load_bench: Callable[[str], ModuleType]) -> ModuleType:
    return load_bench("train_step.py")


def parse_error(ts: ModuleType, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        ts.parse_args(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_cuda_needs_peak_tflops(ts: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(ts, ["--device", "cuda", "--precision", "bf16"], capsys)
    assert "--device cuda needs --peak-tflops" in err and "989" in err


def test_find_max_batch_is_refused_on_cpu(ts: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(ts, ["--find-max-batch"], capsys)
    assert "--find-max-batch needs --device cuda" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused(ts: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    err = parse_error(ts, ["--device", "cuda", "--peak-tflops", "989"], capsys)
    assert "no CUDA device" in err and "--device cpu" in err


def test_compile_needs_a_warmup_round(ts: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--warmup >= 1" in parse_error(ts, ["--compile", "--warmup", "0"], capsys)
    args = ts.parse_args(["--compile", "--precision", "bf16", "--captions", "full"])
    assert (args.device, args.precision, args.compile, args.captions) == ("cpu", "bf16", True, "full")


def test_cc3m_captions_are_deterministic_with_cc3m_like_lengths(ts: ModuleType) -> None:
    captions = ts.make_captions("cc3m", 2000, 77)
    assert captions == ts.make_captions("cc3m", 2000, 77)
    assert ts.make_captions("cc3m", 16, 77) == captions[:16]  # a larger batch starts with a smaller one's captions
    assert ts.make_captions("cc3m", 16, 77, seed=1) != captions[:16]
    tokens_BL = build_tokenizer(77)(captions)
    lengths = (tokens_BL != 0).sum(dim=-1) - 2  # without SOT and EOT
    words = torch.tensor([len(c.split()) for c in captions])
    assert torch.equal(lengths, words)  # every word is one BPE token
    assert lengths.min() >= 5 and lengths.max() <= 30
    assert 9.8 <= lengths.float().mean() <= 10.8  # CC3M: 10.3 tokens on average (Sharma et al. 2018)
    assert len(set(lengths.tolist())) >= 15  # lengths vary
    assert trim_padding(tokens_BL[:16]).shape[-1] < 77  # a real batch is cut well below the context


@pytest.mark.parametrize("context_length", [77, 32])
def test_full_captions_fill_the_context(ts: ModuleType, context_length: int) -> None:
    tokens_BL = build_tokenizer(context_length)(ts.make_captions("full", 8, context_length))
    assert (tokens_BL != 0).all()  # no padding anywhere
    assert trim_padding(tokens_BL).shape[-1] == context_length
    with pytest.raises(ValueError, match="expected one of"):
        ts.make_captions("coco", 8, context_length)


@pytest.mark.slow
def test_tiny_bf16_run_without_the_peer(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(BENCH / "train_step.py"), "--model-config", "tiny", "--batch-size", "8", "--rounds",
           "1", "--warmup", "1", "--threads", "1", "--precision", "bf16", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert (result["device"], result["precision"], result["captions"], result["compile"]) == ("cpu", "bf16", "cc3m",
                                                                                               False)
    assert result["device_name"] and result["torch"] == torch.__version__
    assert result["device_name"] in result["machine"] and torch.__version__ in result["machine"]
    assert "bf16 matmul peak" in result["peak_source"]
    models = result["models"]
    assert set(models) == {"CLIP baseline", "ITO M=2 fusion", "ITO M=2 no fusion", "ITO M=4 fusion"}  # no peer
    for name, m in models.items():
        assert m["text_tokens"] % 8 == 0 and 8 <= m["text_tokens"] <= 32, name  # cut by trim_padding (tiny: 32)
        # The speeds are whatever this machine managed (no bound on them: a busy machine skews the measured peak);
        # what is checked is that MFU is the stated arithmetic on them.
        assert math.isfinite(m["first_loss"]) and m["step_s_best"] == min(result["step_times_s"][name]), name
        assert m["mfu_best"] == pytest.approx(m["train_gflop_per_sample"] * 1e9 * 8 / m["step_s_best"]
                                              / result["peak_flops"]), name
        assert 0.95 < m["analytic_over_counted"] < 1.05, name  # the analytic count at the trimmed length
        assert m["step_rss_mb"] > 0 and "peak_gpu_mb" not in m and "max_micro_batch" not in m, name
        assert len(result["step_times_s"][name]) == 1
    assert "| CLIP baseline |" in proc.stdout and "peak RSS MB" in proc.stdout


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_tiny_bf16_run_on_cuda_finds_the_max_batch(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(BENCH / "train_step.py"), "--model-config", "tiny", "--batch-size", "8", "--rounds",
           "1", "--warmup", "1", "--device", "cuda", "--precision", "bf16", "--peak-tflops", "989",
           "--find-max-batch", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device_name"] == torch.cuda.get_device_name() and result["peak_flops"] == 989e12
    for name, m in result["models"].items():
        assert m["peak_gpu_mb"] > m["step_gpu_mb"] > 0, name
        assert m["max_micro_batch"] >= 8 and m["max_batch_tries"][0]["batch"] == 8, name
    assert "peak GPU MB" in proc.stdout and "max micro-batch" in proc.stdout
