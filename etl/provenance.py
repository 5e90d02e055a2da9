"""How artefacts record how they were made: the code version every writer stamps."""
from __future__ import annotations

import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def code_version() -> str:
    """Package version, plus the git commit (and '.dirty') when run from a checkout."""
    try:
        v = version("deepcraters")
    except PackageNotFoundError:  # run from a source tree that is not installed: still say something
        v = "0+unknown"
    root = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
        if sha.returncode == 0 and sha.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                   capture_output=True, text=True, timeout=5)
            v += f"+g{sha.stdout.strip()}" + (".dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def config_hash(cfg) -> str:
    """Short SHA-256 of a config's full YAML dump (anything with ``.dump()``, e.g. a yacs/Detectron2
    CfgNode, or the dumped text): two artefacts with the same hash were made with the same settings."""
    text = cfg if isinstance(cfg, str) else cfg.dump()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_name(cfg) -> str:
    """A readable name for a Detectron2-style config (``cfg.MODEL``), e.g.
    ``RFCN/build_resnet_backbone/R18``; read from the config, so no model library is imported."""
    depth = cfg.MODEL.RESNETS.DEPTH if "resnet" in cfg.MODEL.BACKBONE.NAME else ""
    parts = (cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.BACKBONE.NAME, f"R{depth}" if depth else "")
    return "/".join(str(p) for p in parts if p)
