"""Test mosaics: a global lon/lat DEM with paraboloid crater bowls (metres, on the Moon sphere)."""
from __future__ import annotations

import numpy as np
import rasterio
from affine import Affine

from etl.moon import MOON_CRS, great_circle_distance_m

DEG_PX = 0.5  # the test mosaic: global lon/lat, 0.5 degree pixels (~15 km)


def bowl_dem(craters: list[tuple[float, float, float]], *, depth_m: float = 1000.0) -> np.ndarray:
    """A global lon/lat DEM (metres) with paraboloid bowls: z = -depth (1 - (r / R)^2) inside."""
    lon = -180.0 + (np.arange(int(360 / DEG_PX)) + 0.5) * DEG_PX
    lat = 90.0 - (np.arange(int(180 / DEG_PX)) + 0.5) * DEG_PX
    lon_g, lat_g = np.meshgrid(lon, lat)
    z = np.zeros(lon_g.shape)
    for c_lon, c_lat, d_km in craters:
        r = great_circle_distance_m(c_lon, c_lat, lon_g, lat_g) / (d_km * 500.0)
        z = np.where(r < 1.0, -depth_m * (1.0 - r ** 2), z)
    return z.astype(np.float32)


def write_global(path, z: np.ndarray) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=z.shape[1], height=z.shape[0], count=1, dtype="float32",
                       crs=MOON_CRS, transform=Affine(DEG_PX, 0, -180.0, 0, -DEG_PX, 90.0), nodata=np.nan) as ds:
        ds.write(z, 1)
