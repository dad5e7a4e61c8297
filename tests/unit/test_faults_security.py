"""What the code may deserialize, and what a store key may be.

- A static check over the shipped packages: weights load from safetensors or
  ``torch.load(weights_only=True)``; nothing else unpickles, extracts tars to disk, or loads
  YAML unsafely, except the reviewed uses listed in ``REVIEWED`` with the reason each is safe.
  (submitit's own job pickles live in its job folders and are read by submitit, not by us.)
- Store keys are checked, not resolved: ``..``, ``.``, absolute keys and NUL are refused by both
  stores, so a sweep or eval-set name cannot write outside the store's root.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from unit.storage.test_stores import WEIRD, fake_aws_env  # noqa: F401 - fake_aws_env is a fixture used below

from ito_core.storage import LocalStore, S3Store, checked_key

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ito_core", "cluster", "flows", "bench")
# (file, call) -> why it is safe. Anything new that deserializes must be reviewed and listed here.
REVIEWED = {
    ("ito_core/data/eval_layouts.py", "pickle.Unpickler"):
        "CifarUnpickler: CIFAR's python files, globals restricted to numpy arrays and builtins",
}


def _calls(path: Path) -> Iterator[tuple[str, ast.Call]]:
    """(dotted name, node) of every call in ``path``: ``pickle.load``, ``torch.load``, ``tar.extractall``..."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node
        if isinstance(node, ast.ClassDef):  # subclassing an unpickler is deserializing too
            for base in node.bases:
                yield ast.unparse(base), ast.Call(func=base, args=[], keywords=[])


def _keyword(call: ast.Call, name: str) -> object:
    return next((ast.literal_eval(k.value) for k in call.keywords if k.arg == name), None)


def _problem(name: str, call: ast.Call) -> str | None:
    last = name.rsplit(".", 1)[-1]
    if name in ("torch.load", "load") and _keyword(call, "weights_only") is not True:
        return "torch.load without weights_only=True"
    if name.startswith(("pickle.", "cPickle.", "dill.", "cloudpickle.")) and last in ("load", "loads", "Unpickler"):
        return "unpickling"
    if last in ("extractall", "extract"):
        return "extracting a tar/zip to disk"
    if name in ("yaml.load", "yaml.unsafe_load") or (name.endswith("np.load") and _keyword(call, "allow_pickle")):
        return "unsafe YAML / pickled numpy"
    return None


def _sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_nothing_unsafe_is_deserialized() -> None:
    found = {}
    for path in _sources():
        rel = path.relative_to(ROOT).as_posix()
        for name, call in _calls(path):
            problem = _problem(name, call)
            if problem and (rel, name) not in REVIEWED:
                found[f"{rel}:{call.lineno}"] = f"{name}: {problem}"
    assert not found, f"review these (safetensors or torch.load(weights_only=True) for weights): {found}"


def test_the_check_sees_what_it_must() -> None:
    """The detector itself: each unsafe form is caught, the safe ones pass."""
    cases = {"torch.load(p)": True, "torch.load(p, weights_only=False)": True, "torch.load(p, weights_only=True)":
             False, "pickle.loads(b)": True, "tar.extractall(d)": True, "yaml.load(s)": True, "yaml.safe_load(s)":
             False, "np.load(p, allow_pickle=True)": True, "np.load(p)": False, "load_file(p)": False}
    for source, unsafe in cases.items():
        call = ast.parse(source).body[0].value
        assert (_problem(ast.unparse(call.func), call) is not None) == unsafe, source


BAD_KEYS = ["../outside", "runs/../../etc/passwd", "/abs/key", "runs/./x", "sweeps/..", "a\x00b"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_keys_that_would_climb_out_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=r"store key .*not allowed.*use plain names"):
        checked_key(key)


@pytest.mark.parametrize("key", BAD_KEYS[:3])
def test_both_stores_refuse_them_before_any_io(key: str, tmp_path: Path, fake_aws_env: None) -> None:  # noqa: F811
    local = LocalStore(tmp_path / "store")
    s3 = S3Store("s3://bucket/p", endpoint_url="http://127.0.0.1:9")  # nothing listens: no call may be made
    for store in (local, s3):
        with pytest.raises(ValueError, match="store key"):
            store.write_text(f"{key}/report.md", "x")
        with pytest.raises(ValueError, match="store key"):
            store.url(key)
    assert not any(tmp_path.rglob("report.md"))


def test_plain_keys_with_odd_characters_still_work(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.write_text(f"{WEIRD}/a..b/x.json", "[1]")  # '..' inside a name is fine, only a whole '..' part climbs
    assert store.read_json(f"{WEIRD}/a..b/x.json") == [1]
