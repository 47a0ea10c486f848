"""The layering of `server/` (scripts/import_graph.py): no arrow against it, no cycle, no web
framework below `api/`, and no torch in the gateway process."""

from __future__ import annotations

import ast
import subprocess
import sys

from scripts.import_graph import SERVER, cycles, module_imports, violations


def test_the_server_keeps_its_layering_and_has_no_cycles() -> None:
    assert violations(module_imports()) == []


def test_the_check_sees_a_wrong_arrow_and_a_cycle() -> None:
    graph = module_imports()
    graph["server.store.store"] = graph["server.store.store"] | {"server.api.deps"}
    problems = violations(graph)
    assert any(p.startswith("store -> api") for p in problems)
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_web_framework_below_the_api() -> None:
    for part in ("serving", "engines", "store", "releases", "protocol"):
        for path in (SERVER / part).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
                assert not any(n.split(".")[0] in ("fastapi", "starlette") for n in names), path


def test_the_gateway_process_does_not_import_torch() -> None:
    probe = (
        "import sys, server.app, server.cli.main; "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
