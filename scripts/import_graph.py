"""The import graph of `server/`, by part, and the layering rules it must keep.

    python scripts/import_graph.py           # print part -> part edges (with module counts)
    python scripts/import_graph.py --check   # exit 1 on an arrow against the layering or a cycle

Parts are the subpackages (`api`, `serving`, …) and the top-level modules. Imports flow
`api | cli → serving | releases → engines → store`; `protocol` holds models only; anything may
import the cross-cutting modules; `vllm_plugin` runs inside vLLM and imports nothing of ours.
Imports under `if TYPE_CHECKING:` count too.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "server"
CROSS_CUTTING = {"errors", "metrics", "logs", "settings", "timing", "jsonio"}
# part -> the parts it may import (besides itself and the cross-cutting modules).
ALLOWED: dict[str, set[str]] = {
    "app": {"api", "runtime"},
    "cli": {"app", "api", "releases", "engines", "store", "protocol", "serving"},
    "api": {"runtime", "serving", "releases", "engines", "store", "protocol"},
    "runtime": {"serving", "releases", "engines", "store", "protocol"},
    "serving": {"engines", "store", "protocol"},
    "releases": {"engines", "store", "protocol"},
    "protocol": {"store"},
    "engines": {"store"},
    "store": set(),
    "vllm_plugin": set(),
    **{name: set() for name in CROSS_CUTTING},
}


def module_imports() -> dict[str, set[str]]:
    """`server.x.y` -> the `server.*` modules it imports."""
    graph: dict[str, set[str]] = {}
    for path in sorted(SERVER.rglob("*.py")):
        rel = path.relative_to(SERVER.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "server":
                    found |= {f"server.{a.name}" for a in node.names}
                elif node.module.startswith("server."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("server.")}
        graph[name] = found - {name}
    return graph


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else "server"


def part_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], int]:
    edges: dict[tuple[str, str], int] = defaultdict(int)
    for module, targets in graph.items():
        for target in targets:
            if part(module) != part(target):
                edges[(part(module), part(target))] += 1
    return dict(edges)


def violations(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for (src, dst), n in sorted(part_edges(graph).items()):
        if src == "server" or (dst in CROSS_CUTTING and src != "vllm_plugin"):
            continue
        if dst not in ALLOWED.get(src, set()):
            found.append(f"{src} -> {dst} ({n} imports) is against the layering")
    found += [f"cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    result: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on a violation")
    args = parser.parse_args()
    graph = module_imports()
    for (src, dst), n in sorted(part_edges(graph).items()):
        if src != "server" and dst not in CROSS_CUTTING:
            print(f"{src:>12} -> {dst:<10} {n}")
    problems = violations(graph)
    for problem in problems:
        print(f"VIOLATION: {problem}", file=sys.stderr)
    if not problems:
        print("no arrow against the layering, no cycles", file=sys.stderr)
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
