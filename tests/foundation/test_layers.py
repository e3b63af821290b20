"""The architecture, checked: every pyapp module imports, no import circle, and the layers hold.

Layers, lowest first; a module may import from its own layer or lower ones, never higher:
0. infrastructure: context, auth, config, errors, inputs, security, db, passwords, mailer, embedded, migrate,
   pyapp.net, pyapp.providers, and the leaves metrics, logs, tracing (no app knowledge beyond `pyapp.context`);
1. realtime delivery: pyapp.realtime (source, frames, sinks, relay);
2. the route registry: pyapp.api;
3. domains and surfaces: everything else (widget, agent, assistant, conversations, console, ...);
4. the composition root: pyapp.app, pyapp.cli.
Imports inside functions count too: a deferred import is still a dependency.
Within a layer, request handlers are the top: a module that declares no routes (`@api.route`)
imports none that does, unless it is the console (which calls handlers through its bridge) or a
package's `__init__`. So sockets, hooks and domain code never depend on a REST handler module.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "pyapp"

INFRASTRUCTURE = ("pyapp.context", "pyapp.auth", "pyapp.config", "pyapp.errors", "pyapp.inputs", "pyapp.security",
                  "pyapp.db", "pyapp.passwords", "pyapp.mailer", "pyapp.embedded", "pyapp.migrate", "pyapp.net",
                  "pyapp.providers", "pyapp.metrics", "pyapp.logs", "pyapp.tracing")
LAYERS = [INFRASTRUCTURE, ("pyapp.realtime",), ("pyapp.api",), ("pyapp",), ("pyapp.app", "pyapp.cli")]
LAYER_NAMES = ["infrastructure", "realtime", "route registry", "domains and surfaces", "composition root"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The pyapp modules `name` imports (a `from package import submodule` names the submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best, length = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best is not None, name
    return best


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_no_import_circle():
    """Depth-first search over the import graph; a back edge is a circle (reported with its path)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], node, dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_layers_hold():
    wrong = [f"{name} ({LAYER_NAMES[_layer(name)]}) imports {dep} ({LAYER_NAMES[_layer(dep)]})"
             for name, deps in sorted(GRAPH.items()) if name != "pyapp"
             for dep in sorted(deps) if _layer(dep) > _layer(name)]
    assert not wrong, "\n".join(wrong)


ROUTE_MODULES = {name for name, path in MODULES.items() if re.search(r"\bapi\.(route|group)\(", path.read_text())}


def _may_import_routes(name: str) -> bool:
    return (name in ROUTE_MODULES or name.startswith("pyapp.console") or name.endswith(".console")
            or MODULES[name].name == "__init__.py" or _layer(name) == len(LAYERS) - 1)


def test_only_handlers_and_the_console_import_handler_modules():
    wrong = [f"{name} imports the route module {dep}" for name, deps in sorted(GRAPH.items())
             if not _may_import_routes(name) for dep in sorted(deps & ROUTE_MODULES)]
    assert not wrong, "\n".join(wrong)


def test_the_checks_can_fail():
    """The graph sees deferred and relative imports, and a module in a higher layer is caught."""
    assert "pyapp.realtime.relay" in GRAPH["pyapp.widget.socket"]
    assert "pyapp.accounts.sessions" in GRAPH["pyapp.console.accounts_bridge"]  # inside functions
    assert "pyapp.accounts.models" in GRAPH["pyapp.accounts.workspace"]  # `from .models import`
    assert _layer("pyapp.realtime.relay") < _layer("pyapp.api") < _layer("pyapp.widget.socket") < _layer("pyapp.app")
    assert _layer("pyapp.net.safe_fetch") == 0 and _layer("pyapp.knowledge.search") == 3
    assert "pyapp.widget.sessions" in ROUTE_MODULES and not _may_import_routes("pyapp.widget.socket")
