"""The eval stage of one run: the stripped model and the prepared eval sets from the store in, the records,
UMAP plots and model card out, committed to ``<run>/eval`` (manifest last).

The same function runs in the flow's process or inside a job (``eval.executor``). A committed eval is
reused only when it was made with the same eval settings (``eval_id``): pointing a finished run at another
eval set evaluates again instead of returning the old records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ito_core.config import RunConfig, as_dict, config_hash
from ito_core.eval.suite import evaluate
from ito_core.prep import shard_urls
from ito_core.storage import MANIFEST, ArtifactStore, commit, export_shard_endpoint, is_committed
from ito_core.strip import load_stripped, write_model_card

log = logging.getLogger(__name__)

EVAL_ID_IGNORED = ("executor", "batch_size")  # where and in what chunks: the records do not depend on them


def eval_id(cfg: RunConfig) -> str:
    """Hash of the eval settings the records depend on."""
    return config_hash({k: v for k, v in as_dict(cfg)["eval"].items() if k not in EVAL_ID_IGNORED})


def committed_eval(store: ArtifactStore, run_key: str, cfg: RunConfig) -> list[dict[str, Any]] | None:
    """The run's committed records when they were made with ``cfg``'s eval settings, else None."""
    if not is_committed(store, f"{run_key}/eval"):
        return None
    manifest = store.read_json(f"{run_key}/eval/{MANIFEST}")
    if manifest.get("eval_id") != eval_id(cfg):
        log.info("eval: %s was made with other eval settings; evaluating again", store.url(f"{run_key}/eval"))
        return None
    return manifest["records"]


def run_eval(cfg: RunConfig, *, store: ArtifactStore, run_key: str, data_keys: dict[str, str],
             staging: Path) -> list[dict[str, Any]]:
    """Evaluate ``<run_key>/model`` on the eval sets of ``data_keys`` (prep's keys; "train" is ignored) on a
    GPU when there is one, and commit ``<run_key>/eval``."""
    model_dir = store.local_dir(f"{run_key}/model") or store.download_dir(f"{run_key}/model", staging / "model")
    sets = {name: key for name, key in data_keys.items() if name != "train"}
    manifests = {name: store.read_json(f"{key}/{MANIFEST}") for name, key in sets.items()}
    export_shard_endpoint(cfg.storage)  # the shard reader streams s3:// with boto3's own env config
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plot_dir = staging / "eval-plots"
    records = evaluate(load_stripped(model_dir).to(device), cfg, {name: shard_urls(store, key)[0]
                       for name, key in sets.items()}, model_name=cfg.model.name,
                       pretrained=store.url(f"{run_key}/model"), plot_dir=plot_dir, manifests=manifests)
    if plot_dir.is_dir():
        store.upload_dir(plot_dir, f"{run_key}/eval")  # umap-<set>.png beside eval/manifest.json
    write_model_card(cfg, store=store, run_key=run_key, records=records)
    commit(store, f"{run_key}/eval", {"records": records, "eval_id": eval_id(cfg)})
    return records
