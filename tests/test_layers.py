"""Package floors (DESIGN.md), read from the source: every import of every module, lazy imports
inside functions included, must point down or sideways within its own package.

- bottom: ``etl``'s facts and transforms (every ``etl`` module except the top ones below);
- middle: ``detectron2_rfcn``, ``age_net``, ``atlas_db``; none imports another;
- top: ``etl.load``, ``etl.commands.*``, ``etl.cli``, ``etl.__main__`` and ``tools/``.

Besides: the bottom and ``atlas_db`` import no torch (nor what needs it), and ``age_net`` no
Detectron2.
"""
from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("etl", "detectron2_rfcn", "age_net", "atlas_db", "tools")
MIDDLE = ("detectron2_rfcn", "age_net", "atlas_db")
TOP_ETL = ("etl.load", "etl.commands", "etl.cli", "etl.__main__")
TORCH = ("torch", "torchvision", "timm", "detectron2", "fvcore")
DETECTRON2 = ("detectron2", "detectron2_rfcn")
#: Libraries a module of a package may not import, even lazily.
FORBIDDEN_LIBRARIES = {"bottom": TORCH, "atlas_db": TORCH, "age_net": DETECTRON2}
FLOOR_RANK = {"bottom": 0, "middle": 1, "top": 2}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def floor_of(module: str) -> str | None:
    """'bottom', 'middle' or 'top' for a module of ours; None for anything else."""
    if _within(module, "tools") or any(_within(module, t) for t in TOP_ETL):
        return "top"
    if any(_within(module, p) for p in MIDDLE):
        return "middle"
    if _within(module, "etl"):
        return "bottom"
    return None


def _group(module: str) -> str:
    """The name its forbidden libraries are listed under."""
    return "bottom" if floor_of(module) == "bottom" else module.split(".")[0]


def _module_name(root: Path, path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def imports_of(path: Path, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement of the file, at any depth; relative
    imports resolved; ``from X import y`` yields X and X.y (y may be a submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def floor_violations(root: Path) -> list[str]:
    """Every import under ``root``'s packages that breaks a floor rule, as 'file:line: why'."""
    problems = []
    for top in PACKAGES:
        for path in sorted((root / top).rglob("*.py")):
            module, is_package = _module_name(root, path)
            floor = floor_of(module)
            where = f"{path.relative_to(root)}"
            for line, target in imports_of(path, module, is_package):
                lib = target.split(".")[0]
                if lib in FORBIDDEN_LIBRARIES.get(_group(module), ()):
                    problems.append(f"{where}:{line}: {module} ({floor}) imports {target}, which its floor may not")
                    continue
                target_floor = floor_of(target)
                if target_floor is None or floor == "top":
                    continue
                if FLOOR_RANK[target_floor] > FLOOR_RANK[floor]:
                    problems.append(f"{where}:{line}: {module} ({floor}) imports {target} ({target_floor})")
                elif floor == target_floor == "middle" and lib != module.split(".")[0]:
                    problems.append(f"{where}:{line}: {module} (middle) imports {target}, another middle package")
    return sorted(set(problems))


def test_the_tree_keeps_its_floors():
    assert floor_violations(REPO) == []


def _code_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a file that are not docstrings (docstrings may talk about craters)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_sql_on_the_schema_lives_only_in_atlas_db():
    """Table and view names in SQL (and so the schema's lock order) appear in atlas_db only."""
    from atlas_db.models import Base
    from atlas_db.views import VIEWS

    names = sorted(set(Base.metadata.tables) | set(VIEWS))
    sql = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|LOCK|COPY|FROM|JOIN|TRUNCATE|ANALYZE)\b")
    table = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = [f"{path.relative_to(REPO)}:{line}: {text.strip()[:60]!r}"
             for top in PACKAGES if top != "atlas_db" for path in sorted((REPO / top).rglob("*.py"))
             for line, text in _code_strings(path) if sql.search(text) and table.search(text)]
    assert found == []
    bulk = "\n".join(text for _, text in _code_strings(REPO / "atlas_db" / "bulk.py"))
    assert table.search(bulk)  # the check would see them: the bulk load names its tables


def test_the_checker_sees_every_module():
    """It reads every source file of the five packages (so nothing escapes by not being found)."""
    seen = {_module_name(REPO, p)[0] for top in PACKAGES for p in (REPO / top).rglob("*.py")}
    assert {"etl.moon", "etl.load", "etl.commands.load", "atlas_db.bulk", "detectron2_rfcn.engine",
            "tools.train_net"} <= seen
    assert floor_of("etl.load") == "top" and floor_of("etl.loaders") == "bottom"  # names, not prefixes
    assert floor_of("etl.commands.query") == "top" and floor_of("atlas_db.queries") == "middle"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_a_module_on_the_wrong_floor_is_reported(tmp_path):
    _write(tmp_path, {
        "etl/__init__.py": "from etl.moon import R\n",
        "etl/moon.py": "R = 1\n",
        "etl/load.py": "import atlas_db.bulk\nimport torch\n",                # top: anything goes
        "etl/commands/__init__.py": "",
        "etl/commands/query.py": "from atlas_db import queries\n",
        "etl/geometry.py": "def f():\n    from atlas_db.bulk import load\n",   # bottom -> middle, lazily
        "etl/rasters.py": "def g():\n    import torch\n",                      # torch at the bottom
        "etl/tiling.py": "from etl.commands import query\n",                  # bottom -> top
        "atlas_db/__init__.py": "",
        "atlas_db/bulk.py": "from etl.moon import R\nfrom . import queries\n",  # down, and sideways: fine
        "atlas_db/queries.py": "from etl.load import x\n",                   # middle -> top
        "atlas_db/models.py": "def h():\n    from detectron2_rfcn.atlas import a\n",  # middle -> middle
        "atlas_db/srs.py": "import torchvision.ops\n",                        # torch in atlas_db
        "age_net/__init__.py": "",
        "age_net/model.py": "import timm\n\n\ndef k():\n    import detectron2.config\n",  # timm ok, d2 not
        "detectron2_rfcn/__init__.py": "from .config import C\n",
        "detectron2_rfcn/config.py": "import torch\nfrom etl.moon import R\nC = 1\n",
        "detectron2_rfcn/atlas.py": "from ..age_net import model\n",         # relative, to another middle
        "tools/train_net.py": "from detectron2_rfcn import C\nfrom etl.commands import query\n",
    })
    found = floor_violations(tmp_path)
    expected_prefixes = [
        "age_net/model.py:5: age_net.model (middle) imports detectron2.config",
        "atlas_db/models.py:2: atlas_db.models (middle) imports detectron2_rfcn.atlas, another middle package",
        "atlas_db/queries.py:1: atlas_db.queries (middle) imports etl.load (top)",
        "atlas_db/srs.py:1: atlas_db.srs (middle) imports torchvision.ops",
        "detectron2_rfcn/atlas.py:1: detectron2_rfcn.atlas (middle) imports age_net",
        "etl/geometry.py:2: etl.geometry (bottom) imports atlas_db.bulk (middle)",
        "etl/rasters.py:2: etl.rasters (bottom) imports torch",
        "etl/tiling.py:1: etl.tiling (bottom) imports etl.commands (top)",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in found), (prefix, found)
    reported_files = {p.split(":")[0] for p in found}
    assert reported_files == {p.split(":")[0] for p in expected_prefixes}  # and nothing that keeps the rules
