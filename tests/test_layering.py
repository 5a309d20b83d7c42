"""The layers import downwards only: a router parses, authorizes, calls a service and maps the result,
so it needs no other router and no activity; a service is called by the API, the CLI and the worker,
so it imports nothing of the API."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import swapflow

PACKAGE = Path(swapflow.__file__).parent


def _modules(folder: str) -> dict[str, Path]:
    """The modules under swapflow/<folder>, by dotted name."""
    return {
        "swapflow." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        if path.name != "__init__.py"
    }


def _imported(path: Path) -> Iterator[str]:
    """Every module a file imports, and for `from x import y` also x.y (y may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: use absolute imports, as the rest of swapflow does")
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_no_router_imports_another_router() -> None:
    routers = _modules("api/routers")
    found = {
        module: sorted(name for name in _imported(path) if name in routers and name != module)
        for module, path in routers.items()
    }
    assert {module: names for module, names in found.items() if names} == {}


def test_no_router_imports_an_activity_module() -> None:
    found = {
        module: sorted(name for name in _imported(path) if _within(name, "swapflow.activities"))
        for module, path in _modules("api/routers").items()
    }
    assert {module: names for module, names in found.items() if names} == {}


def test_no_service_imports_the_api() -> None:
    found = {
        module: sorted(name for name in _imported(path) if _within(name, "swapflow.api"))
        for module, path in _modules("services").items()
    }
    assert {module: names for module, names in found.items() if names} == {}
