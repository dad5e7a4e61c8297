"""Fixtures for the data tests: small shape shards written once per session, a reversible tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ito_core.data.embedded import shapes_samples
from ito_core.data.shards import write_shards

SHARD_IMAGE_SIZE = 32
NUM_SHARD_SAMPLES = 70  # 3 shards of 25, 25, 20: batches straddle epochs and shards


class CharTokenizer:
    """Stand-in for ClipTokenizer: one id per character, then an end id larger than any character (as CLIP's EOT
    is its largest id), zero padded, so tests can decode texts back."""

    END_ID = 0x110000  # one past the last Unicode code point

    def __init__(self, context_length: int = 160) -> None:
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> torch.Tensor:
        ids_nL = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for i, text in enumerate(texts):
            codes = [*(ord(c) for c in text[: self.context_length - 1]), self.END_ID]
            ids_nL[i, : len(codes)] = torch.tensor(codes, dtype=torch.long)
        return ids_nL

    @classmethod
    def decode(cls, ids_L: torch.Tensor) -> str:
        return "".join(chr(int(i)) for i in ids_L if i not in (0, cls.END_ID))


@pytest.fixture(scope="session")
def shapes_shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("shapes_shards")
    samples = shapes_samples("train", num_samples=NUM_SHARD_SAMPLES, image_size=SHARD_IMAGE_SIZE, seed=3)
    write_shards(samples, out_dir, image_size=SHARD_IMAGE_SIZE, samples_per_shard=25, jpeg_quality=90)
    return out_dir


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer()
