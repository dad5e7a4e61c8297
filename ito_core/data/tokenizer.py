"""CLIP's byte-level BPE tokenizer, giving the same ids as open_clip's `SimpleTokenizer` / `open_clip.tokenize`.

Cleaning and word splitting run in Python with CLIP's exact rules (ftfy, HTML unescape, whitespace, lower case,
CLIP's regex), so the words are the reference's words; the byte-level BPE of those words, the start/end tokens,
truncation and zero padding run in HF `tokenizers` (Rust).

Vocabulary: `bpe_simple_vocab_16e6.txt.gz` from OpenAI CLIP via OpenCLIP (MIT, see `LICENSE-clip-bpe`).

Shape legend: B = number of texts, L = context length (tokens per text).
"""

import functools
import gzip
import html
from collections.abc import Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN = "<start_of_text>"
EOT_TOKEN = "<end_of_text>"
END_OF_WORD = "</w>"
# CLIP keeps only the first 49152 - 256 - 2 merges of the file, for 49408 ids in all:
# 256 bytes, the same 256 at word end, the merges, then the two special tokens.
NUM_MERGES = 48_894
VOCAB_SIZE = 49_408

# CLIP's word splitter: special tokens, English contractions, letter runs, single digits, punctuation runs.
# IGNORECASE matters even on lower-cased text: case folding lets e.g. "'ſ" match the contraction "'s".
_WORD_PATTERN = regex.compile(
    "|".join([SOT_TOKEN, EOT_TOKEN, r"'s|'t|'re|'ve|'m|'ll|'d", r"\p{L}+", r"\p{N}", r"[^\s\p{L}\p{N}]+"]),
    regex.IGNORECASE,
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from each byte to a printable character; its order fixes token ids 0-255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    # Whitespace and control bytes are moved to code points 256+ so that no token contains them.
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def clean_text(text: str) -> str:
    """CLIP's "lower" cleaning: fix mojibake, unescape HTML twice (captions are often double-escaped),
    collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def split_words(text: str) -> list[str]:
    """The pre-tokens CLIP runs BPE on, after cleaning."""
    return _WORD_PATTERN.findall(clean_text(text))


@functools.cache
def _read_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    with gzip.open(VOCAB_PATH) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]  # line 0 is a version header
    byte_chars = list(bytes_to_unicode().values())
    tokens = [*byte_chars, *(c + END_OF_WORD for c in byte_chars), *("".join(m) for m in merges)]
    tokens += [SOT_TOKEN, EOT_TOKEN]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {token: i for i, token in enumerate(tokens)}, merges


def _build_hf_tokenizer(context_length: int) -> Tokenizer:
    vocab, merges = _read_vocab()
    hf = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix=END_OF_WORD))
    # Words arrive already split (split_words); ByteLevel only maps their bytes to BPE characters.
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    # A word that is exactly a special token maps to its id, as CLIP's cache does; it can never be part of a word.
    hf.add_special_tokens([SOT_TOKEN, EOT_TOKEN])
    specials = [(SOT_TOKEN, vocab[SOT_TOKEN]), (EOT_TOKEN, vocab[EOT_TOKEN])]
    hf.post_processor = processors.TemplateProcessing(single=f"{SOT_TOKEN} $A {EOT_TOKEN}", special_tokens=specials)
    # Truncation happens before the end token is appended, so a cut text still ends with EOT, as in CLIP.
    hf.enable_truncation(max_length=context_length)
    # CLIP pads with id 0 (which is also the token "!"); models find the end by EOT, never by padding.
    hf.enable_padding(length=context_length, pad_id=0, pad_token=next(iter(vocab)))
    return hf


class ClipTokenizer:
    """Texts -> LongTensor [B, context_length]: SOT, BPE ids, EOT, zero padding; long texts are cut to end in EOT."""

    def __init__(self, context_length: int = 77) -> None:
        if context_length < 2:
            raise ValueError(f"context_length={context_length}; it must be >= 2 to hold the start and end tokens")
        vocab, _ = _read_vocab()
        self.vocab_size: int = len(vocab)
        self.sot_token_id: int = vocab[SOT_TOKEN]
        self.eot_token_id: int = vocab[EOT_TOKEN]
        self.context_length: int = context_length
        self._hf = _build_hf_tokenizer(context_length)

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        words = [split_words(text) for text in texts]
        encodings = self._hf.encode_batch_fast(words, is_pretokenized=True)  # _fast: skips char offsets
        # Through numpy: several times faster than torch.tensor on nested lists; the reshape keeps [0, L] for [].
        ids_BL = np.array([e.ids for e in encodings], dtype=np.int64).reshape(len(words), self.context_length)
        return torch.from_numpy(ids_BL)


def trim_padding(tokens_BL: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """Cut the padding columns after the batch's longest text (its EOT included), rounded up to ``multiple``.

    Exact for our models: the causal text tower reads out at EOT, which never attends past itself, and the fusion
    module masks padding keys. CLIP captions average ~10 tokens of the 77, so the text tower and the fusion run
    several times fewer tokens. The rounding bounds how many shapes ``torch.compile`` sees. Run it on the CPU
    batch: its max over the lengths would be a host sync on the GPU."""
    if tokens_BL.numel() == 0:
        return tokens_BL
    longest = int(tokens_BL.argmax(dim=-1).max()) + 1  # EOT has the largest id, so argmax is its position
    return tokens_BL[..., : min(-(-longest // multiple) * multiple, tokens_BL.shape[-1])]


@functools.cache
def build_tokenizer(context_length: int = 77) -> ClipTokenizer:
    """The shared tokenizer for `context_length` (building one reads the vocabulary, so reuse it)."""
    return ClipTokenizer(context_length)
