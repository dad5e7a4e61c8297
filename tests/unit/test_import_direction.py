"""Imports point one way: flows -> cluster -> ito_core. ito_core never imports prefect or submitit,
cluster never imports prefect (checked in a fresh interpreter with those packages blocked), and inside
ito_core the layers of ``LAYERS`` only import downwards, type-checking imports included, with no circle between
modules (checked on the sources)."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

BLOCK_AND_IMPORT = """
import importlib, pkgutil, sys
BLOCKED = {blocked!r}

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} imported from {package}")

sys.meta_path.insert(0, Blocker())
package = importlib.import_module({package!r})
for info in pkgutil.walk_packages(package.__path__, prefix={package!r} + "."):
    importlib.import_module(info.name)
print("ok")
"""


@pytest.mark.parametrize(("package", "blocked"), [("ito_core", ("prefect", "submitit")), ("cluster", ("prefect",))])
def test_package_does_not_import_upstream_layers(package: str, blocked: tuple[str, ...]) -> None:
    code = BLOCK_AND_IMPORT.format(package=package, blocked=blocked)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# Lowest first: a module may import from its own layer and the layers below it, never from one above. The longest
# prefix names a module's layer (ito_core.eval.stage is a stage; the rest of ito_core.eval are components); a "*"
# stands for any one name (ito_core.methods.*.* is the torch code of each method package).
LAYERS = (
    ("ito_core.storage",),  # local/S3 stores: no other ito_core module
    ("ito_core.config.schema", "ito_core.config.checks", "ito_core.config.errors"),  # schemas, shared checks
    ("ito_core.methods", "ito_core.methods.*"),  # method specs and their registry (torch-free)
    ("ito_core.config",),  # validation, loading
    ("ito_core.artifacts", "ito_core.distributed", "ito_core.flops", "ito_core.shapes",
     "ito_core.tracking", "ito_core.checkpoint_upload",
     "ito_core.checkpoint_snapshot"),  # keys, process group, input checks, background upload, state snapshot
    ("ito_core.models", "ito_core.losses", "ito_core.data", "ito_core.eval", "ito_core.accumulation",
     "ito_core.activation_checkpointing", "ito_core.checkpoint", "ito_core.export", "ito_core.methods.*.*",
     "ito_core.model_folder", "ito_core.train_state"),  # components
    ("ito_core.prep", "ito_core.prep_array", "ito_core.train", "ito_core.strip", "ito_core.eval.stage",
     "ito_core.preflight"),  # stages
    ("cluster",),
    ("flows",),
)
ROOT = Path(__file__).resolve().parents[2]


def covers(prefix: str, module: str) -> bool:
    """Whether ``module`` is ``prefix`` or inside it, a "*" in ``prefix`` matching any one name."""
    want, parts = prefix.split("."), module.split(".")
    return len(parts) >= len(want) and all(w in ("*", p) for w, p in zip(want, parts, strict=False))


def layer_of(module: str) -> int:
    matches = [(len(prefix.split(".")), rank) for rank, prefixes in enumerate(LAYERS) for prefix in prefixes
               if covers(prefix, module)]
    assert matches, f"{module} is in no layer: add it to LAYERS"
    return max(matches)[1]


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def project_imports(path: Path, *, type_checking: bool = True) -> set[str]:
    """Modules of this project ``path`` imports; ``type_checking=False`` leaves ``if TYPE_CHECKING:`` blocks out
    (what it imports when it runs)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if not type_checking and isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from package import module` imports that module; `from module import name`, the module itself
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(name for name in names if is_module(name))
            if not all(map(is_module, names)):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name.split(".")[0] in ("ito_core", "cluster", "flows") and name != "ito_core"}


def import_graph(*, type_checking: bool = True) -> dict[str, set[str]]:
    """Each module of ito_core, cluster and flows -> the project modules it imports."""
    graph = {}
    for path in sorted(p for package in ("ito_core", "cluster", "flows") for p in (ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = project_imports(path, type_checking=type_checking)
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{module} -> {dep}" for module, deps in graph.items() for dep in sorted(deps)
            if layer_of(dep) > layer_of(module)]


def circles(graph: dict[str, set[str]]) -> list[str]:
    """One circle of imports between modules (a package counts as its ``__init__``), or none."""
    try:
        tuple(graphlib.TopologicalSorter({m: {d for d in deps if d in graph} for m, deps in graph.items()})
              .static_order())
    except graphlib.CycleError as err:
        return list(err.args[1])
    return []


def test_no_module_imports_from_a_higher_layer() -> None:
    """Type-checking imports count too: a type from a higher layer still ties the lower one to it."""
    upward = upward_imports(import_graph())
    assert not upward, f"imports from a higher layer: {upward}"


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert not circles(import_graph()), f"an import circle: {' -> '.join(circles(import_graph()))}"


def test_the_checks_see_an_upward_import_made_only_for_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ito_core.config import X\n")
    assert project_imports(source) == {"ito_core.config"} and not project_imports(source, type_checking=False)
    assert upward_imports({"ito_core.storage": project_imports(source)}) == ["ito_core.storage -> ito_core.config"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) and not circles({"a": {"b"}, "b": set()})


def test_naming_a_run_loads_no_torch() -> None:
    """The flow process names runs and checks what is committed without the training or prep stack."""
    code = "import sys, ito_core.artifacts, cluster.jobs; print(sorted({'torch', 'deepspeed'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]


def test_only_the_registry_and_a_methods_own_tests_import_a_method() -> None:
    """A method is named by its spec alone: stages, eval, artifacts and validation ask ``ito_core.methods.registry``.
    Its package's modules import each other; tests and benchmarks import it when they are about that method (under a
    ``methods/`` folder, or named after it)."""
    from ito_core.methods import registry

    names, offenders = set(registry.names()), []
    for path in sorted(p for folder in ("ito_core", "cluster", "flows", "tests", "bench")
                       for p in (ROOT / folder).rglob("*.py")):
        relative = path.relative_to(ROOT)
        for dep in sorted(project_imports(path)):
            parts = dep.split(".")
            if parts[:2] != ["ito_core", "methods"] or len(parts) < 3 or parts[2] not in names:
                continue
            own_package = relative.parts[:3] == ("ito_core", "methods", parts[2])
            own_test = relative.parts[0] in ("tests", "bench") and ("methods" in relative.parts[:-1]
                                                                   or parts[2] in relative.name)
            if not (own_package or own_test):
                offenders.append(f"{relative} imports {dep}")
    assert not offenders, offenders
