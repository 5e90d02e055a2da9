"""Load one of the repository's command-line scripts (benchmarks/, tools/) as a module, so that a test
can call its functions: the scripts are files, not packages."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str | None = None) -> ModuleType:
    """The script at ``REPO / relative_path``, executed as a fresh module named ``name`` (default: its stem)."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
