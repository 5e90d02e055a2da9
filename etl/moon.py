"""Facts about the Moon that every package reads from here (and only here).

Kept free of heavy imports: this module sits at the bottom of the floors.
"""
from __future__ import annotations

import math

import numpy as np

#: Mean radius of the lunar reference sphere, metres (IAU 2015, Moon_2000).
MOON_RADIUS_M: float = 1_737_400.0
MOON_RADIUS_KM: float = MOON_RADIUS_M / 1000.0

#: Geographic CRS of the Moon (lon/lat on the 1,737,400 m sphere).
MOON_CRS: str = "IAU_2015:30100"

#: The same sphere as PostGIS ships it (GCS_Moon_2000); used as the SRID in the database.
MOON_SRID: int = 104903


def normalize_lon(lon_deg):
    """Map longitudes (0..360 or any value) into [-180, 180). Works on scalars and arrays."""
    lon = np.asarray(lon_deg, dtype=float)
    out = (lon + 180.0) % 360.0 - 180.0
    return float(out) if out.ndim == 0 else out


def great_circle_distance_m(lon1_deg, lat1_deg, lon2_deg, lat2_deg, radius_m: float = MOON_RADIUS_M):
    """Haversine great-circle distance on the lunar sphere, metres (arrays broadcast)."""
    lon1, lat1, lon2, lat2 = (np.radians(np.asarray(v, dtype=float)) for v in (lon1_deg, lat1_deg, lon2_deg, lat2_deg))
    h = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    d = 2.0 * radius_m * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return float(d) if d.ndim == 0 else d


def unit_vector(lon_deg, lat_deg) -> np.ndarray:
    """Unit-sphere x, y, z of lon/lat (last axis of size 3)."""
    lon, lat = np.radians(np.asarray(lon_deg, dtype=float)), np.radians(np.asarray(lat_deg, dtype=float))
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def chord_for_distance(distance_m: float, radius_m: float = MOON_RADIUS_M) -> float:
    """Straight-line chord on the unit sphere equivalent to a surface distance (monotonic)."""
    angle = min(distance_m / radius_m, math.pi)
    return 2.0 * math.sin(angle / 2.0)


def km_per_degree_latitude(radius_m: float = MOON_RADIUS_M) -> float:
    """Length of one degree of latitude on the sphere, km."""
    return 2.0 * math.pi * radius_m / 360.0 / 1000.0
