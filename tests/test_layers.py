"""The package's layers import one way: base <- config <- core <- outputs <- runtime <- cli.

Every import statement in ``src/asynca3c`` is read (also the ones inside
functions: a lazy back-edge is still a back-edge); none may reach a higher
layer, and the module graph has no cycle. Code meant for other processes is
checked by what it really loads, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import asynca3c

PACKAGE = Path(asynca3c.__file__).parent

#: Lower rank may be imported by higher; never the other way. Outputs sit beside (below) the runtime.
RANKS = {"base": 0, "config": 1, "core": 2, "outputs": 3, "runtime": 4, "cli": 5}
BASE = {"asynca3c._version", "asynca3c.errors", "asynca3c.checks"}
CONFIG = {"asynca3c.config", "asynca3c.config_files"}


def layer_of(module: str) -> str:
    if module in BASE:
        return "base"
    if module in CONFIG:
        return "config"
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in RANKS:
        return parts[1]
    raise AssertionError(f"{module} belongs to no layer: put it in one (see tests/test_layers.py)")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set[str]:
    """The asynca3c modules ``path`` imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    found: set[str] = set()
    known = modules()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("asynca3c"))
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import; the layer check reads absolute imports only"
            base = node.module or ""
            if not base.startswith("asynca3c"):
                continue
            for alias in node.names:  # 'from asynca3c.outputs import checkpoint' imports a submodule
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {name: imports_of(path, name) for name, path in modules().items()}


def test_every_module_has_a_layer():
    for name in modules():
        if name != "asynca3c":
            layer_of(name)


def test_no_import_reaches_a_higher_layer():
    back_edges = []
    for name, targets in graph().items():
        if name == "asynca3c":
            continue
        for target in targets:
            if target == "asynca3c":
                back_edges.append(f"{name} imports the package itself (import the defining module instead)")
            elif RANKS[layer_of(target)] > RANKS[layer_of(name)]:
                back_edges.append(f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})")
    assert not back_edges, "\n".join(sorted(back_edges))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``g`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done or node not in g:
            return None
        for nxt in sorted(g[node]):
            cycle = visit(nxt, path + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    return next((c for c in (visit(n, []) for n in sorted(g)) if c), None)


def test_the_module_graph_has_no_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_checker_sees_a_back_edge(tmp_path):
    """The walker itself: a core module importing the runtime is reported."""
    fake = tmp_path / "asynca3c" / "core"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from asynca3c.runtime.trainer import Trainer\n")
    found = imports_of(fake / "bad.py", "asynca3c.core.bad")
    assert "asynca3c.runtime.trainer" in found
    assert RANKS[layer_of("asynca3c.runtime.trainer")] > RANKS[layer_of("asynca3c.core.bad")]


def loaded_by(code: str) -> set[str]:
    """The asynca3c modules and whether torch is loaded after running ``code`` in a fresh interpreter."""
    probe = code + "\nimport sys; print('MODULES', *(m for m in sys.modules if m.startswith(('asynca3c', 'torch'))))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.rpartition("MODULES")[2].split())


@pytest.mark.parametrize("code", [
    "from asynca3c.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
    "from asynca3c.cli import main\ntry:\n    main(['train', '--help'])\nexcept SystemExit:\n    pass",
    "from asynca3c.cli import main\nmain(['check-env', 'CartPole-v1', '--skip-render-check'])",
    "import asynca3c\nfrom asynca3c import Config, ConfigError, Asynca3cError",
], ids=["help", "train-help", "check-env", "import-config"])
def test_help_check_env_and_config_load_no_torch(code):
    loaded = loaded_by(code)
    assert "torch" not in loaded, sorted(m for m in loaded if m.startswith("asynca3c"))
    assert not any(m.startswith("asynca3c.runtime") for m in loaded)


def test_the_learner_worker_loads_only_the_core_the_wire_format_and_shared_memory():
    loaded = {m for m in loaded_by("import asynca3c.runtime.learner_worker") if m.startswith("asynca3c.")}
    allowed = {"asynca3c.runtime", "asynca3c.runtime.learner_worker", "asynca3c.runtime.wire",
               "asynca3c.runtime.shm"}
    outside = sorted(m for m in loaded if m not in allowed and layer_of(m) not in ("base", "config", "core"))
    assert not outside, outside


@pytest.mark.parametrize("module", ["asynca3c.runtime.agent", "asynca3c.runtime.async_agents",
                                    "asynca3c.runtime.predictor"])
def test_acting_code_loads_neither_cli_nor_outputs(module):
    loaded = loaded_by(f"import {module}")
    assert not any(m.startswith(("asynca3c.cli", "asynca3c.outputs")) for m in loaded), sorted(loaded)


def test_public_names_resolve_lazily_and_stay_importable():
    loaded = loaded_by("import asynca3c")
    assert "torch" not in loaded and loaded <= {"asynca3c", "asynca3c._version"}
    from asynca3c import Config, NStepKernel, Trainer, evaluate, nstep_returns, train, vtrace  # noqa: F401

    for name in asynca3c.__all__:
        assert getattr(asynca3c, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        asynca3c.nope  # noqa: B018


def test_every_public_error_derives_from_the_base():
    from asynca3c import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, asynca3c.Asynca3cError)
        assert getattr(asynca3c, name) is cls
