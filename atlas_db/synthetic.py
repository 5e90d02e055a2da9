"""Synthetic crater populations for tests and benchmarks (no database, no files).

Centres are uniform on the sphere; diameters follow a power law with cumulative slope
-2 above ``d_min_km`` (N(>D) ~ D^-2, close to the lunar production function over
1-100 km that Robbins 2018 samples), capped at 2,500 km (the South Pole-Aitken basin).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from etl.contracts import AgeProvenance, AtlasProvenance, ages_frame, make_crater_ids
from etl.moon import km_per_degree_latitude

ROBBINS_2018_SIZE = 1_300_000
_METRES_PER_PX = 100.0  # pixel grid of the fake source mosaic (simple cylindrical)


def synthetic_catalogue(n: int, seed: int = 0, d_min_km: float = 1.0, slope: float = 2.0) -> pd.DataFrame:
    """``n`` craters: lon in [-180, 180), lat, diameter_km."""
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-180.0, 180.0, n)
    lat = np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n)))
    diameter = np.minimum(d_min_km * rng.uniform(0.0, 1.0, n) ** (-1.0 / slope), 2500.0)
    return pd.DataFrame({"lon": lon, "lat": lat, "diameter_km": diameter})


def synthetic_atlas(n: int, run_name: str, seed: int = 0, catalogue: pd.DataFrame | None = None) -> pd.DataFrame:
    """A contract-shaped atlas frame (ids, scores, pixel boxes, level) over a synthetic catalogue."""
    cat = synthetic_catalogue(n, seed) if catalogue is None else catalogue.reset_index(drop=True)
    rng = np.random.default_rng(seed + 1)
    m_per_deg = km_per_degree_latitude() * 1000.0  # simple cylindrical: the same along both axes
    cx = (cat["lon"].to_numpy() + 180.0) * m_per_deg / _METRES_PER_PX
    cy = (90.0 - cat["lat"].to_numpy()) * m_per_deg / _METRES_PER_PX
    half = cat["diameter_km"].to_numpy() * 500.0 / _METRES_PER_PX
    df = pd.DataFrame({
        "crater_id": make_crater_ids(cat["lon"], cat["lat"], cat["diameter_km"], run_name),
        "lon": cat["lon"].to_numpy(), "lat": cat["lat"].to_numpy(), "diameter_km": cat["diameter_km"].to_numpy(),
        "score": rng.uniform(0.3, 1.0, len(cat)),
        "x0_px": cx - half, "y0_px": cy - half, "x1_px": cx + half, "y1_px": cy + half,
        "level": rng.choice([1, 2, 4], len(cat)).astype("int32"),
    })
    return df


def synthetic_ages(crater_ids, seed: int = 0) -> pd.DataFrame:
    """A contract-shaped age table with Dirichlet class probabilities."""
    rng = np.random.default_rng(seed)
    return ages_frame(crater_ids, rng.dirichlet(np.full(5, 0.7), len(crater_ids)))


def atlas_provenance(run_name: str, **kw) -> AtlasProvenance:
    base = dict(model="rfcn_R_50_C4", config_hash="0" * 12, source_mosaics=("synthetic_dom.tif",),
                code_version="test")
    base.update(kw)
    return AtlasProvenance(run_name=run_name, **base)


def age_provenance(run_name: str, atlas_run: str, **kw) -> AgeProvenance:
    base = dict(model="agenet_resnet18", config_hash="1" * 12, code_version="test")
    base.update(kw)
    return AgeProvenance(run_name=run_name, atlas_run=atlas_run, **base)
