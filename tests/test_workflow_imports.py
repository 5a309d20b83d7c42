"""Workflows import only the domain and their contracts: never the database, the settings or an
activity's implementation (their I/O has no place in the workflow sandbox). They call activities by
the contracts' typed declarations, which must match what the worker registers."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
import typing
from collections.abc import Callable, Iterator
from typing import Any

from temporalio import activity

import swapflow.activities
import swapflow.workflows

IMPORT_ALL = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""
FORBIDDEN = ("sqlalchemy", "swapflow.settings", "swapflow.db", "swapflow.activities")


def _modules(package: Any) -> list[str]:
    return sorted(f"{package.__name__}.{module.name}" for module in pkgutil.iter_modules(package.__path__))


def _activity_name(function: Callable[..., Any]) -> str | None:
    definition = activity._Definition.from_callable(function)
    return definition.name if definition else None


def _declared() -> Iterator[tuple[str, Callable[..., Any]]]:
    """The activities the workflow contracts declare."""
    for name in _modules(swapflow.workflows):
        for member in vars(importlib.import_module(name)).values():
            if inspect.isfunction(member) and member.__module__ == name and (declared := _activity_name(member)):
                yield declared, member


def _implemented() -> dict[str, Callable[..., Any]]:
    """The activities the worker's activity classes implement, by name."""
    found: dict[str, Callable[..., Any]] = {}
    for name in _modules(swapflow.activities):
        for cls in vars(importlib.import_module(name)).values():
            if inspect.isclass(cls) and cls.__module__ == name:
                for member in vars(cls).values():
                    if inspect.isfunction(member) and (implemented := _activity_name(member)):
                        found[implemented] = member
    return found


def test_no_workflow_module_imports_the_database_the_settings_or_an_activity_implementation() -> None:
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, *_modules(swapflow.workflows)], capture_output=True, text=True, check=True
    )
    loaded = json.loads(run.stdout)
    assert [name for name in loaded if name.startswith(FORBIDDEN)] == []


def test_every_activity_a_workflow_declares_is_implemented_with_the_same_types() -> None:
    implemented = _implemented()
    declared = list(_declared())
    assert declared
    for name, declaration in declared:
        assert name in implemented, f"activity {name!r} is declared for the workflows but not implemented"
        hints = typing.get_type_hints(implemented[name])
        hints.pop("self", None)
        assert list(hints.items()) == list(typing.get_type_hints(declaration).items()), name
