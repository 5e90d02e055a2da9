"""etl: lunar geometry, rasters, catalogues, tiling, the synthetic world and the PostGIS load.

Importing ``etl`` stays light: no torch and no SQLAlchemy at import time.
"""
from etl.age_classes import AGE_CLASS_CODES, NUM_AGE_CLASSES, AgeClass
from etl.moon import MOON_CRS, MOON_RADIUS_KM, MOON_RADIUS_M, great_circle_distance_m, normalize_lon

__all__ = [
    "AGE_CLASS_CODES",
    "NUM_AGE_CLASSES",
    "AgeClass",
    "MOON_CRS",
    "MOON_RADIUS_KM",
    "MOON_RADIUS_M",
    "great_circle_distance_m",
    "normalize_lon",
]
