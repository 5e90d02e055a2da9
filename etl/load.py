"""``deepcraters load``: read atlas / age / reference files, validate them completely, then hand
them to the database package's bulk load (``atlas_db.bulk``), one transaction per file.

The file is read and validated (``etl.contracts``) before any connection is made; what a
load does in the database (locks, COPY, upsert, index rebuild) and which tables it touches
belong to ``atlas_db``. This module is the top floor: it may import ``atlas_db``, never the
other way round.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from atlas_db.bulk import LoadResult, load_age_run, load_atlas_run, load_reference_catalogue
from etl.contracts import (AgeProvenance, AtlasProvenance, read_ages, read_atlas, read_reference,
                           validate_ages, validate_atlas, validate_reference)

__all__ = ["LoadResult", "load_ages", "load_ages_frame", "load_atlas", "load_atlas_frame", "load_reference",
           "load_reference_frame"]


def load_atlas_frame(df: pd.DataFrame, provenance: AtlasProvenance, url: str | None = None, *, engine=None,
                     source: str = "<atlas>", progress: bool = False, validated: bool = False,
                     replace: bool = False) -> LoadResult:
    """Validate (unless ``validated``) and load an atlas frame as detection run ``provenance.run_name``.
    A load that would delete most of a stored run needs ``replace`` (``atlas_db.bulk.ReplaceRefused``)."""
    t0 = time.perf_counter()
    if not validated:
        df = validate_atlas(df, provenance, source)
    return _timed(load_atlas_run(df, provenance, url, engine=engine, progress=progress, replace=replace), t0)


def load_ages_frame(df: pd.DataFrame, provenance: AgeProvenance, url: str | None = None, *, engine=None,
                    source: str = "<ages>", progress: bool = False, validated: bool = False,
                    replace: bool = False) -> LoadResult:
    """Validate (unless ``validated``) and load an age table as age run ``provenance.run_name``
    over ``provenance.atlas_run``, which must already be loaded and hold every ``crater_id``."""
    t0 = time.perf_counter()
    if not validated:
        df = validate_ages(df, provenance, source)
    return _timed(load_age_run(df, provenance, url, engine=engine, source=source, progress=progress,
                               replace=replace), t0)


def load_reference_frame(df: pd.DataFrame, name: str, url: str | None = None, *, engine=None,
                         source_text: str | None = None, source: str = "<reference>",
                         progress: bool = False, replace: bool = False) -> LoadResult:
    """Validate and load a reference catalogue under ``name`` (replacing its previous content)."""
    t0 = time.perf_counter()
    df = validate_reference(df, name, source)
    return _timed(load_reference_catalogue(df, name, url, engine=engine, source_text=source_text,
                                           progress=progress, replace=replace), t0)


def _timed(result: LoadResult, t0: float) -> LoadResult:
    """The result with its time measured from ``t0`` (validation included)."""
    return replace(result, seconds=time.perf_counter() - t0)


def load_atlas(path: str | Path, url: str | None = None, *, engine=None, progress: bool = False,
               replace: bool = False) -> LoadResult:
    """Read, validate and load an atlas file (GeoPackage, Parquet or CSV)."""
    df, prov = read_atlas(path)
    return load_atlas_frame(df, prov, url, engine=engine, source=str(path), progress=progress, validated=True,
                            replace=replace)


def load_ages(path: str | Path, url: str | None = None, *, engine=None, progress: bool = False,
              replace: bool = False) -> LoadResult:
    """Read, validate and load an age table; its atlas run must be loaded already."""
    df, prov = read_ages(path)
    return load_ages_frame(df, prov, url, engine=engine, source=str(path), progress=progress, validated=True,
                           replace=replace)


def load_reference(path: str | Path, name: str, url: str | None = None, *, engine=None,
                   source_text: str | None = None, progress: bool = False, replace: bool = False) -> LoadResult:
    """Read, validate and load a reference catalogue file under ``name``."""
    df = read_reference(path, name)
    return load_reference_frame(df, name, url, engine=engine, source_text=source_text, source=str(path),
                                progress=progress, replace=replace)
