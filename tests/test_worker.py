"""The worker process: what it prepares before it polls."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from swapflow.worker import WORKFLOWS, cache_workflow_bytecode


def test_the_worker_caches_the_bytecode_of_every_workflow_module_the_sandbox_reimports() -> None:
    # The sandbox imports a workflow's module for every workflow it starts: with the bytecode cached
    # that import does not compile the source again (PYTHONDONTWRITEBYTECODE would otherwise stop it).
    sources = {Path(inspect.getfile(workflow_class)) for workflow_class in WORKFLOWS}
    for source in sources:
        Path(importlib.util.cache_from_source(str(source))).unlink(missing_ok=True)
    cache_workflow_bytecode()
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime, source
