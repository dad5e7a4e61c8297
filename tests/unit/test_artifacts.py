"""ito_core.artifacts is the one home of store keys: their shapes, what changes them (and what does not), a
run's folders, and a scan of the sources for any other module that spells a store path or a manifest name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from ito_core import artifacts
from ito_core.artifacts import (
    RUN_IDENTITY,
    RUNS,
    RunLayout,
    committed,
    eval_id,
    prep_keys,
    read_manifest,
    run_key,
    train_data_key,
)
from ito_core.config import as_dict, config_hash, load_config
from ito_core.storage import LocalStore, commit

ROOT = Path(__file__).resolve().parents[2]
# Where store keys and the commit marker may be spelled out: the key module and the store's commit rule.
KEY_HOMES = {"ito_core/artifacts.py", "ito_core/storage/base.py"}
STORE_PATH = re.compile(r"^(runs|data|sweeps)/|manifest\.json|^/(train|model|eval|checkpoints|config\.json)\b")


def test_keys_have_their_documented_shapes() -> None:
    cfg = load_config()
    key = run_key(cfg)
    assert re.fullmatch(r"runs/[0-9a-f]{16}", key)
    assert re.fullmatch(r"data/train-[0-9a-f]{16}", train_data_key(cfg.data))
    keys = prep_keys(cfg.data, cfg.eval)
    assert keys["train"] == train_data_key(cfg.data)
    assert list(keys) == ["train", "fashion_mnist", "tuxpaint", "shapes_heldout", "shapes"]
    assert re.fullmatch(r"data/eval-shapes-[0-9a-f]{16}", keys["shapes"])
    run = RunLayout(key)
    assert (run.config, run.checkpoints, run.train, run.model, run.eval, run.checkpoint("step_00000004")) == (
        f"{key}/config.json", f"{key}/checkpoints", f"{key}/train", f"{key}/model", f"{key}/eval",
        f"{key}/checkpoints/step_00000004")
    assert artifacts.sweep_key("demo") == "sweeps/demo"


@pytest.mark.parametrize(("override", "changes_run", "changes_eval"), [
    ("ito.images=4", True, False),
    ("data.image_size=40", True, False),  # other shards, so other weights
    ("data.num_workers=3", False, False),  # the same shards, read by more workers
    ("eval.batch_size=7", False, False),  # the same records, in other chunks
    ("eval.max_samples=100", False, True),
    ("cluster.tasks_per_node=2", False, False),  # where it runs, not what it computes
])
def test_what_changes_a_key(override: str, changes_run: bool, changes_eval: bool) -> None:
    base, other = load_config(), load_config([override])
    assert (run_key(base) != run_key(other), eval_id(base) != eval_id(other)) == (changes_run, changes_eval)


@pytest.mark.parametrize("overrides", [[], ["ito=clip"]])
def test_options_added_later_keep_the_run_keys_from_before_them_at_their_default(overrides: list[str]) -> None:
    """A run key hashes the config without ito.patch_dropout and ito.second_view_size at their defaults (issue 26):
    the key a config had before the options existed."""
    cfg = load_config(overrides)
    identity = {k: v for k, v in as_dict(cfg).items() if k in RUN_IDENTITY}
    identity["ito"] = {k: v for k, v in identity["ito"].items() if k not in ("patch_dropout", "second_view_size")}
    identity["data"] = train_data_key(cfg.data)
    assert run_key(cfg) == f"{RUNS}/{config_hash(identity)}"
    assert run_key(load_config([*overrides, "ito.fusion_image_tokens=cls", "ito.patch_dropout=0.5"])) != run_key(
        load_config([*overrides, "ito.fusion_image_tokens=cls"]))


def test_committed_means_the_manifest_was_written(tmp_path: Path) -> None:
    store, key = LocalStore(tmp_path), RunLayout("runs/abc").train
    store.write_json(f"{key}/history.json", [1])
    assert not committed(store, key)
    with pytest.raises(FileNotFoundError):
        read_manifest(store, key)
    commit(store, key, {"step": 3})
    assert committed(store, key) and read_manifest(store, key) == {"step": 3}


def _spelled_store_paths(path: Path) -> list[str]:
    """String pieces in code (docstrings left out) that spell a store path or the manifest's name."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and STORE_PATH.search(node.value)]


def test_no_other_module_spells_a_store_path() -> None:
    sources = sorted(p for package in ("ito_core", "cluster", "flows", "bench") for p in (ROOT / package).rglob("*.py")
                     if p.relative_to(ROOT).as_posix() not in KEY_HOMES)
    found = [hit for path in sources for hit in _spelled_store_paths(path)]
    assert not found, f"build store keys with ito_core.artifacts (RunLayout, *_key) instead: {found}"
    assert _spelled_store_paths(ROOT / "ito_core" / "artifacts.py"), "the scan sees the keys where they are"
