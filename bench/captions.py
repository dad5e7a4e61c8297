"""Captions for the benchmarks' batches: CC3M-like lengths, or every caption filling the context (the worst case).

The text tower's (and the fusion's) cost follows the caption length, since our loader and eval cut padding after a
batch's longest caption; OpenCLIP always runs the whole context. So benchmark batches need realistic lengths.
"""

from __future__ import annotations

import math
import random

# Caption generator: CC3M-like word counts (Sharma et al. 2018: 10.3 tokens per caption on average), from a
# log-normal (mean 10.3, sd ~4) rounded and clipped to 5-30 words. Every word is one CLIP BPE token, so a caption
# of n words runs n + 2 tokens (SOT, EOT). Nothing is downloaded; the same seed gives the same captions.
CAPTION_WORDS_MIN, CAPTION_WORDS_MAX, CAPTION_WORDS_MEAN, CAPTION_WORDS_SIGMA = 5, 30, 10.3, 0.375
_CAPTION_WORDS_TEXT = """a the of in on with and at for by to from near under over beside through during after before
man woman person people child children boy girl baby family friends couple team crowd player actor artist
dog cat horse bird cow sheep fish bear lion tiger elephant animal flower tree trees plant grass leaves forest
house home room kitchen bedroom table chair bed window door wall floor roof building city street road bridge
car bus train boat truck bike plane ship park garden beach sea ocean river lake mountain mountains hill sky
cloud clouds sun snow rain water field village town island desert sunset night morning day evening summer
winter autumn spring light view background style vector illustration photo image design pattern icon logo
cartoon drawing painting portrait picture poster card map set old new young little small large big beautiful
happy red blue green white black yellow brown pink orange golden dark bright colorful modern traditional
wooden empty open famous local classic vintage front top side close up holding sitting standing walking
running playing looking wearing smiling dancing eating riding working driving reading posing attends arrives
performs celebrates plays is are his her their its football match game stage event concert festival show
party wedding church school market shop restaurant hotel office museum station stadium airport hospital"""
CAPTION_WORDS = tuple(_CAPTION_WORDS_TEXT.split())
CAPTION_KINDS = ("cc3m", "full")


def caption_word_counts(count: int, *, seed: int = 0) -> list[int]:
    """Words per caption of the ``cc3m`` kind: the first ``count`` of a fixed seeded sequence."""
    rng = random.Random(seed)
    mu = math.log(CAPTION_WORDS_MEAN) - CAPTION_WORDS_SIGMA**2 / 2  # the log-normal's mean is CAPTION_WORDS_MEAN
    return [min(CAPTION_WORDS_MAX, max(CAPTION_WORDS_MIN, round(rng.lognormvariate(mu, CAPTION_WORDS_SIGMA))))
            for _ in range(count)]


def make_captions(kind: str, count: int, context_length: int, *, seed: int = 0) -> list[str]:
    """``count`` captions: ``cc3m`` = CC3M-like lengths; ``full`` = each fills ``context_length`` tokens (the
    tokenizer cuts it to end in EOT). Deterministic: a larger batch starts with the captions of a smaller one."""
    if kind not in CAPTION_KINDS:
        raise ValueError(f"captions {kind!r}: expected one of {CAPTION_KINDS}")
    counts = caption_word_counts(count, seed=seed) if kind == "cc3m" else [context_length] * count
    rng = random.Random(seed + 1)
    return [" ".join(rng.choices(CAPTION_WORDS, k=n)) for n in counts]
