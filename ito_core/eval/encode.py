"""One pass over an eval set: read it a batch at a time, encode its images (and, when a task needs them, every
caption) once, and keep what every task on the set reads: the suite's tasks and a method's extra eval path
(``ito_core.eval.extra``) alike. The zero-shot classifier of a set is built once too, for whichever asks first.

Encoding runs on the model's device under ``eval.precision`` (autocast; features are float32), with a progress
bar on a terminal.

Shape legend: N images, T captions, D joint dim, C classes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from ito_core.config import RunConfig
from ito_core.data.augment import eval_transform
from ito_core.data.loader import iter_eval_batches
from ito_core.data.tokenizer import build_tokenizer, trim_padding
from ito_core.eval.features import compute_features, eval_mode, model_device
from ito_core.eval.templates import OPENAI_IMAGENET_TEMPLATES
from ito_core.eval.zero_shot import build_zero_shot_classifier
from ito_core.models.dual_encoder import DualEncoder

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# A method's own image features, computed on each transformed pixel batch beside encode_image (FLAIR: patch tokens).
ImageExtra = Callable[[DualEncoder, torch.Tensor], torch.Tensor]


@dataclass
class EvalFeatures:
    """One model's L2-normalised features of one eval set, shared by every task on that set."""

    images_ND: torch.Tensor
    labels_N: torch.Tensor  # -1 where a sample has no label
    texts_TD: torch.Tensor | None = None  # every caption of every image, when a task needs them
    text_to_image_T: torch.Tensor | None = None  # image index of each caption
    text_ids_T: torch.Tensor | None = None  # equal for captions with the same tokens (tie-aware retrieval)
    classnames: list[str] = field(default_factory=list)  # the set's class names in label order (zero-shot)
    in_distribution: bool = False  # drawn from a source the training data holds (suite.in_distribution)
    image_extra: torch.Tensor | None = None  # what an ImageExtra returned, per image, concatenated
    classifier_DC: torch.Tensor | None = None  # the zero-shot classifier, once built (zero_shot_classifier)


@dataclass
class EvalSetReader:
    """One pass over an eval set, a batch at a time: yields each batch's pixels and keeps what the encoders
    need afterwards (captions, labels), so memory holds one batch of pixels whatever the set's size."""

    shards: list[str]
    cfg: RunConfig
    captions: list[list[str]] = field(default_factory=list)  # per image read so far
    labels: list[torch.Tensor] = field(default_factory=list)  # per batch read so far
    _tokens: torch.Tensor | None = None

    def pixel_batches(self) -> Iterator[torch.Tensor]:
        eval_cfg = self.cfg.eval
        for batch in iter_eval_batches(self.shards, batch_size=eval_cfg.batch_size, limit=eval_cfg.max_samples):
            self.captions.extend(batch.captions)
            self.labels.append(batch.labels_B)
            yield batch.images_BCHW

    def labels_N(self) -> torch.Tensor:
        return torch.cat(self.labels)

    def caption_tokens(self) -> torch.Tensor:
        """Every caption of the images read, tokenized (once)."""
        if self._tokens is None:
            texts = [text for caps in self.captions for text in caps]
            self._tokens = build_tokenizer(self.cfg.model.context_length)(texts)
        return self._tokens

    def caption_token_batches(self) -> Iterator[torch.Tensor]:
        """``caption_tokens`` in batches of ``eval.batch_size`` with padding trimmed."""
        return map(trim_padding, self.caption_tokens().split(self.cfg.eval.batch_size))

    def text_ids_T(self) -> torch.Tensor:
        """One id per caption, equal for captions the text tower cannot tell apart (the same tokens)."""
        return torch.unique(self.caption_tokens(), dim=0, return_inverse=True)[1]

    def text_to_image_T(self) -> torch.Tensor:
        """Image index of each caption, in ``caption_token_batches`` order."""
        return torch.tensor([i for i, caps in enumerate(self.captions) for _ in caps], dtype=torch.long)


@contextlib.contextmanager
def encoding(model: DualEncoder, precision: str) -> Iterator[None]:
    """Eval mode, no grad and autocast to ``eval.precision`` around the model's forward passes only: the
    metrics computed afterwards compare float32 features."""
    dtype = AUTOCAST_DTYPES.get(precision)
    with eval_mode(model), torch.autocast(model_device(model).type, dtype=dtype, enabled=dtype is not None):
        yield


def _encode(model: DualEncoder, fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor],
            cfg: RunConfig, *, desc: str) -> torch.Tensor:
    with encoding(model, cfg.eval.precision):
        return compute_features(fn, batches, device=model_device(model), desc=desc)


def encode_eval_set(model: DualEncoder, shards: list[str], cfg: RunConfig, *, with_texts: bool,
                    name: str = "eval", image_extra: ImageExtra | None = None) -> EvalFeatures:
    """Read an eval set once, a batch at a time, and encode its images (and, ``with_texts``, all of its
    captions). ``image_extra`` also runs on each transformed pixel batch; its outputs land in ``image_extra``.
    Memory holds one batch of pixels plus the features, whatever the set's size."""
    reader, extras = EvalSetReader(shards, cfg), []

    def encode_pixels(images_BCHW: torch.Tensor) -> torch.Tensor:
        pixels_BCHW = eval_transform(images_BCHW, cfg.model.image_size)
        if image_extra is not None:
            extras.append(image_extra(model, pixels_BCHW))
        return model.encode_image(pixels_BCHW)

    images_ND = _encode(model, encode_pixels, reader.pixel_batches(), cfg, desc=f"{name} images")
    features = EvalFeatures(images_ND, reader.labels_N(), image_extra=torch.cat(extras) if extras else None)
    if with_texts:
        features.texts_TD = _encode(model, model.encode_text, reader.caption_token_batches(), cfg,
                                    desc=f"{name} captions")
        features.text_to_image_T = reader.text_to_image_T()
        features.text_ids_T = reader.text_ids_T()
    return features


def zero_shot_classifier(model: DualEncoder, feats: EvalFeatures, cfg: RunConfig) -> torch.Tensor:
    """The set's zero-shot classifier ``[D, C]`` (its class names' prompt-ensemble embeddings), built on first use
    and kept on ``feats`` for every later task that asks."""
    if feats.classifier_DC is None:
        with encoding(model, cfg.eval.precision):
            feats.classifier_DC = build_zero_shot_classifier(model, feats.classnames, OPENAI_IMAGENET_TEMPLATES,
                                                             build_tokenizer(cfg.model.context_length),
                                                             batch_size=cfg.eval.batch_size)
    return feats.classifier_DC
