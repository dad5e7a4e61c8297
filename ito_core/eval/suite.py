"""The eval stage: zero-shot classification and image-text retrieval of a stripped model.

Results use CLIP_benchmark's record layout (``dataset``, ``model``, ``pretrained``, ``task``,
``metrics``) so they can sit beside CLIP_benchmark outputs.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ito_core.config import RunConfig
from ito_core.data.augment import eval_transform
from ito_core.data.embedded import FASHION_MNIST_CLASSES
from ito_core.data.loader import read_eval_set
from ito_core.data.tokenizer import build_tokenizer
from ito_core.eval.features import compute_features, eval_mode, model_device
from ito_core.eval.retrieval import retrieval_metrics
from ito_core.eval.templates import OPENAI_IMAGENET_TEMPLATES
from ito_core.eval.zero_shot import build_zero_shot_classifier, zero_shot_metrics
from ito_core.models.dual_encoder import DualEncoder

log = logging.getLogger(__name__)

ZERO_SHOT_CLASSES = {"fashion_mnist": FASHION_MNIST_CLASSES}


def _encode(model: DualEncoder, fn: Any, inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    with eval_mode(model):
        return compute_features(fn, inputs.split(batch_size), device=model_device(model))


def _image_features(model: DualEncoder, shards: list[str], cfg: RunConfig) -> tuple[torch.Tensor, list, torch.Tensor]:
    images, captions, labels = read_eval_set(shards, limit=cfg.eval.max_samples)
    pixels = eval_transform(images, cfg.model.image_size)
    return _encode(model, model.encode_image, pixels, cfg.eval.batch_size), captions, labels


def zero_shot_record(model: DualEncoder, name: str, shards: list[str], cfg: RunConfig) -> dict[str, Any]:
    features, _, labels = _image_features(model, shards, cfg)
    classifier = build_zero_shot_classifier(model, ZERO_SHOT_CLASSES[name], OPENAI_IMAGENET_TEMPLATES,
                                            build_tokenizer(cfg.model.context_length))
    return {"dataset": name, "task": "zeroshot_classification",
            "metrics": zero_shot_metrics(features, labels, classifier)}


def retrieval_record(model: DualEncoder, name: str, shards: list[str], cfg: RunConfig) -> dict[str, Any]:
    features, captions, _ = _image_features(model, shards, cfg)
    texts = [text for caps in captions for text in caps]
    text_to_image = torch.tensor([i for i, caps in enumerate(captions) for _ in caps])
    tokens = build_tokenizer(cfg.model.context_length)(texts)
    text_features = _encode(model, model.encode_text, tokens, cfg.eval.batch_size)
    return {"dataset": name, "task": "zeroshot_retrieval",
            "metrics": retrieval_metrics(features, text_features, text_to_image)}


def evaluate(model: DualEncoder, cfg: RunConfig, eval_shards: dict[str, list[str]], *, model_name: str,
             pretrained: str) -> list[dict[str, Any]]:
    """Run every configured eval task; ``eval_shards`` maps eval set names to shard paths."""
    records = []
    if cfg.eval.zero_shot:
        records.append(zero_shot_record(model, cfg.eval.zero_shot, eval_shards[cfg.eval.zero_shot], cfg))
    if cfg.eval.retrieval:
        records.append(retrieval_record(model, cfg.eval.retrieval, eval_shards[cfg.eval.retrieval], cfg))
    for record in records:
        record.update(model=model_name, pretrained=pretrained)
        log.info("eval %s %s: %s", record["dataset"], record["task"],
                 {k: round(v, 4) for k, v in record["metrics"].items()})
    return records


def summary_metrics(records: list[dict[str, Any]]) -> dict[str, float]:
    """Flat ``<dataset>/<metric>`` view of eval records, for sweep tables."""
    return {f"{r['dataset']}/{k}": v for r in records for k, v in r["metrics"].items()}
