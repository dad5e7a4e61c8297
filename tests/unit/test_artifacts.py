"""ito_core.artifacts is the one home of store keys: their shapes, what changes them (and what does not), a
run's folders, and scans of the sources for any other module that spells a store path or a manifest name, or
formats a key inside an artifact."""

from __future__ import annotations

import ast
import itertools
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
from ito_core.storage import ArtifactStore, LocalStore, commit

ROOT = Path(__file__).resolve().parents[2]
# Where store keys and the commit marker may be spelled out: the key module and the store's commit rule.
KEY_HOMES = {"ito_core/artifacts.py", "ito_core/storage/base.py"}
# Where keys inside an artifact may be formatted: the key module, and the stores, which map a key to files or objects.
FORMAT_HOMES = ("ito_core/artifacts.py", "ito_core/storage/")
STORE_CALLS = {name for name in dir(ArtifactStore) if not name.startswith("_")}  # store.<method>(key, ...)
KEY_CALLS = {"commit", "committed", "read_manifest", "manifest_key"}  # f(store, key, ...) or manifest_key(key)
TOP_FOLDERS = {"RUNS", "DATA", "SWEEPS", "PREFLIGHT", "PREP_TASKS"}
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


def _formatted(node: ast.AST) -> bool:
    """Whether ``node`` builds a path from pieces: an f-string, ``a + "/..."`` or ``"{}/{}".format(...)``."""
    pieces = node.values if isinstance(node, ast.JoinedStr) else [node.left, node.right] if isinstance(
        node, ast.BinOp) and isinstance(node.op, ast.Add) else [node.func.value] if isinstance(
        node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" else []
    return any(isinstance(p, ast.Constant) and "/" in str(p.value) for p in pieces)


def _tail_name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def formatted_store_keys(source: str, where: str) -> list[str]:
    """Places that format a store key: a formatted key handed to a store method or to commit/committed/
    read_manifest, an f-string that appends ``/...`` to a ``*key`` value, or one that spells a top folder."""
    hits: dict[int, str] = {}  # line -> what it formats
    for node in ast.walk(ast.parse(source)):
        suspect = None
        if isinstance(node, ast.Call):
            name = _tail_name(node.func)
            args = node.args[:1] if isinstance(node.func, ast.Attribute) and name in STORE_CALLS else \
                node.args[:2] if name in KEY_CALLS else []
            suspect = next((arg for arg in args if _formatted(arg)), None)
        elif isinstance(node, ast.JoinedStr):
            pieces = node.values
            appends = any(isinstance(a, ast.FormattedValue) and _tail_name(a.value).lower().endswith("key")
                          and isinstance(b, ast.Constant) and str(b.value).startswith("/")
                          for a, b in itertools.pairwise(pieces))
            folders = any(isinstance(v, ast.FormattedValue) and _tail_name(v.value) in TOP_FOLDERS for v in pieces)
            suspect = node if appends or folders else None
        if suspect is not None:
            hits.setdefault(node.lineno, f"{where}:{node.lineno}: {ast.unparse(suspect)[:80]}")
    return [hits[line] for line in sorted(hits)]


def test_no_other_module_formats_a_key_inside_an_artifact() -> None:
    sources = sorted(p for package in ("ito_core", "cluster", "flows", "bench") for p in (ROOT / package).rglob("*.py")
                     if not p.relative_to(ROOT).as_posix().startswith(FORMAT_HOMES))
    found = [hit for path in sources for hit in formatted_store_keys(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, f"build keys inside an artifact with ito_core.artifacts (member_key, RunLayout, ...): {found}"


@pytest.mark.parametrize("line", [
    'store.exists(f"{self.key}/{name}.json")',
    'store.write_text(folder + "/report.md", text)',
    'commit(store, "{}/{}".format(key, tag), manifest)',
    'marker = f"{key}/tasks/{task}.json"',
    'hint = f"{RUNS}/<run>"',
])
def test_the_format_scan_sees_each_way_of_spelling_a_key(line: str) -> None:
    assert formatted_store_keys(line, "snippet"), line


def test_the_format_scan_leaves_other_strings_alone() -> None:
    source = ('store.exists(member_key(key, name))\nlog.info(f"{done}/{total} shards")\n'
              'rng_key = f"{seed}/lanes/{epoch}"\nmetric = f"{dataset}/{name}"\n')
    assert not formatted_store_keys(source, "snippet")
