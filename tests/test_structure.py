"""The structure holds: no import cycle among the modules of the core, the wire package and
the client; the wire package imports nothing but itself, the standard library, numpy and
pyarrow; the client reaches the server package only inside the embedded transport."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "chroma_core": ROOT / "chroma_core",
    "chroma_wire": ROOT / "wire" / "chroma_wire",
    "chroma_client": ROOT / "client" / "chroma_client",
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def imports(path: Path, module: str) -> set[str]:
    """Every module ``module`` imports anywhere in its file (inside functions and under
    ``if TYPE_CHECKING:`` too), ``from a import b`` counting as ``a`` and ``a.b``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def top_level_imports(path: Path) -> set[str]:
    """The modules imported by the statements at the top of the file."""
    out = set()
    for stmt in ast.parse(path.read_text()).body:
        if isinstance(stmt, ast.Import):
            out.update(a.name for a in stmt.names)
        elif isinstance(stmt, ast.ImportFrom):
            out.add(stmt.module or "")
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {
        name: {m for m in imports(path, name) if m in known} - {name}
        for name, path in known.items()
    }


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``edges``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_among_core_wire_and_client_modules():
    # every import counts, those made only for type checking and inside functions too:
    # a cycle hidden behind a lazy import is still a cycle a reader has to follow
    edges = graph()
    # a package's __init__ importing its own modules is how a package presents itself
    for name in list(edges):
        if name in PACKAGES:
            edges[name] = {m for m in edges[name] if not m.startswith(name + ".")}
    assert cycle(edges) is None, " -> ".join(cycle(edges) or [])


def test_the_wire_package_imports_nothing_of_the_server():
    allowed = set(sys.stdlib_module_names) | {"numpy", "pyarrow", "chroma_wire"}
    for name, path in modules().items():
        if name.startswith("chroma_wire"):
            roots = {m.split(".")[0] for m in imports(path, name)}
            assert roots <= allowed, f"{name} imports {sorted(roots - allowed)}"


def test_the_client_reaches_the_server_only_for_the_embedded_mode():
    for name, path in modules().items():
        if not name.startswith("chroma_client"):
            continue
        server = {m for m in imports(path, name) if m.split(".")[0] == "chroma_core"}
        if name == "chroma_client.transport":
            # Embedded loads the service when it is made, never at import
            assert not any(m.startswith("chroma_core") for m in top_level_imports(path))
        else:
            assert server == set(), f"{name} imports {sorted(server)}"
