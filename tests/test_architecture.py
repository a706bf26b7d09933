"""The layering of docs/architecture.md, checked on every import (module level and inside functions):
runnerlib.security imports nothing else from runnerlib, nothing imports a layer above its own, and no
module imports itself back through others (no cycles)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "runnerlib"

# Lowest first. A module may import from its own layer and the layers below.
LAYERS: list[tuple[str, ...]] = [
    ("runnerlib.security",),
    ("runnerlib.execution.allocator", "runnerlib.execution.conditions", "runnerlib.execution.logs",
     "runnerlib.execution.own_words", "runnerlib.execution.least_privilege",
     "runnerlib.execution.process", "runnerlib.execution.container", "runnerlib.execution.step_state",
     "runnerlib.source", "runnerlib.secrets_client", "runnerlib.testing", "runnerlib.exit_codes",
     "runnerlib.execution.cancellation",
     "runnerlib.suggest", "runnerlib.observability",
     "runnerlib.execution.retry", "runnerlib.execution.step_refs", "runnerlib.execution.step_files",
     "runnerlib.execution.workflow_commands", "runnerlib.execution.step_protocol",
     "runnerlib.execution.timestamps", "runnerlib.execution.console_controls"),
    ("runnerlib.jobs", "runnerlib.config", "runnerlib.trust_origin", "runnerlib.local_checkout",
     "runnerlib.step_env", "runnerlib.job_summary",
     "runnerlib.plugins", "runnerlib.plugin_loader",
     "runnerlib.execution.scheduler", "runnerlib.execution.container_steps",
     "runnerlib.execution.container_prestart", "runnerlib.workflow"),
    ("runnerlib.runner",),
    ("runnerlib.workflow.local_runner", "runnerlib.workflow.kubernetes_runner",
     "runnerlib.workflow.container_runner"),
    ("runnerlib.cli", "runnerlib", "runnerlib.__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    """The layer of the longest matching prefix (workflow.local_runner sits above workflow)."""
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS and docs/architecture.md"
    return rank


def _imports(module: str) -> Iterator[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name


GRAPH = {module: set(_imports(module)) for module in MODULES}


def test_security_imports_nothing_above_it() -> None:
    bad = [(m, t) for m, targets in GRAPH.items() if m.startswith("runnerlib.security")
           for t in targets if not t.startswith("runnerlib.security")]
    assert not bad


def test_no_upward_imports() -> None:
    bad = [f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets
           if m != "runnerlib" and _layer(t) > _layer(m)]
    assert not bad, "upward imports:\n" + "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if target == "runnerlib":
                continue  # the lazy top-level API
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
