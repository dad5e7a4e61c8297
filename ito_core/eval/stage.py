"""The eval stage of one run: the stripped model and the prepared eval sets from the store in, the records,
UMAP plots and model card out, committed to ``<run>/eval`` (manifest last).

The same function runs in the flow's process or inside a job (``eval.executor``). A committed eval is
reused only when it was made with the same eval settings (``artifacts.eval_id``): pointing a finished run at another
eval set evaluates again instead of returning the old records.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ito_core.artifacts import RunLayout, committed, eval_id, read_manifest
from ito_core.config import RunConfig
from ito_core.eval.suite import evaluate
from ito_core.eval.text_conditioned import text_conditioned_eval
from ito_core.methods.flair import load_pooler
from ito_core.prep import shard_urls
from ito_core.storage import ArtifactStore, commit, export_shard_endpoint
from ito_core.strip import load_stripped, write_model_card

log = logging.getLogger(__name__)

def committed_eval(store: ArtifactStore, run_key: str, cfg: RunConfig) -> list[dict[str, Any]] | None:
    """The run's committed records when they were made with ``cfg``'s eval settings, else None."""
    key = RunLayout(run_key).eval
    if not committed(store, key):
        return None
    manifest = read_manifest(store, key)
    if manifest.get("eval_id") != eval_id(cfg):
        log.info("eval: %s was made with other eval settings; evaluating again", store.url(key))
        return None
    return manifest["records"]


def run_eval(cfg: RunConfig, *, store: ArtifactStore, run_key: str, data_keys: dict[str, str],
             staging: Path) -> list[dict[str, Any]]:
    """Evaluate ``<run_key>/model`` on the eval sets of ``data_keys`` (prep's keys; "train" is ignored) on a
    GPU when there is one, and commit ``<run_key>/eval``. A FLAIR model folder (``flair_pool.safetensors``) is
    also scored text-conditioned (``ito_core.eval.text_conditioned``: ``*_tc`` records)."""
    run = RunLayout(run_key)
    model_dir = store.local_dir(run.model) or store.download_dir(run.model, staging / "model")
    sets = {name: key for name, key in data_keys.items() if name != "train"}
    manifests = {name: read_manifest(store, key) for name, key in sets.items()}
    export_shard_endpoint(cfg.storage)  # the shard reader streams s3:// with boto3's own env config
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    plot_dir = staging / "eval-plots"
    model, shards = load_stripped(model_dir).to(device), {name: shard_urls(store, key)[0] for name, key in sets.items()}
    pool = load_pooler(model_dir)  # a FLAIR model: also scored text-conditioned
    records = evaluate(model, cfg, shards, model_name=cfg.model.name, pretrained=store.url(run.model),
                       plot_dir=plot_dir, manifests=manifests,
                       extra_eval=text_conditioned_eval(pool) if pool is not None else None)
    if plot_dir.is_dir():
        store.upload_dir(plot_dir, run.eval)  # umap-<set>.png beside the eval manifest
    write_model_card(cfg, store=store, run_key=run_key, records=records)
    commit(store, run.eval, {"records": records, "eval_id": eval_id(cfg)})
    return records
