"""A tiny crater tile dataset for tests, written by the one tile-dataset writer.

A few seconds to write, so detector tests run without cutting a synthetic world. Craters
are bowls (DEM) shaded by a sun from the east (DOM) with their slope as a third channel, so
the three bands carry the same kind of signal as the real ones. Each region (a horizontal
strip of tiles) goes to one split, as etl splits by region. Tiles lie in the Moon's
geographic CRS, ``DEG_PER_PX`` degrees a pixel, so every crater has a lon/lat/diameter_km.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from rasterio.transform import from_origin

from etl.moon import MOON_CRS, km_per_degree_latitude
from etl.rasters import CHANNELS
from etl.tile_dataset import TileDatasetWriter

DEG_PER_PX = 0.001


def render_crater_tile(height_px: int, width_px: int, craters_xyr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(3, H, W) float32 in ~[0, 1]: DOM (hillshade, sun from the east), DEM, slope."""
    yy, xx = np.mgrid[0:height_px, 0:width_px].astype(np.float32) + 0.5
    dem = 0.02 * rng.standard_normal((height_px, width_px)).astype(np.float32)
    for x, y, r in craters_xyr:
        d = np.hypot(xx - x, yy - y) / r
        bowl = np.where(d < 1.0, -0.6 * (1.0 - d ** 2), 0.0)
        rim = 0.25 * np.exp(-((d - 1.0) / 0.15) ** 2)
        dem += (bowl + rim).astype(np.float32)
    gy, gx = np.gradient(dem)
    slope = np.hypot(gx, gy)
    dom = np.clip(0.5 + 4.0 * gx, 0.0, 1.0)  # lit where the ground faces east
    dem01 = (dem - dem.min()) / max(float(np.ptp(dem)), 1e-6)
    slope01 = slope / max(float(slope.max()), 1e-6)
    return np.stack([dom, dem01, slope01]).astype(np.float32)


def write_toy_crater_dataset(out_dir, *, tiles_per_split: dict[str, int] | None = None, tile_size_px: int = 96,
                             radius_range_px: Sequence[float] = (5.0, 16.0), craters_per_tile: int = 4,
                             empty_tile_every: int = 4, seed: int = 0) -> Path:
    """Write a tile dataset under ``out_dir`` and return its path.

    Every ``empty_tile_every``-th tile has no craters; craters may cross the tile edge
    (then their box is clipped and ``truncated`` is true)."""
    tiles_per_split = tiles_per_split or {"train": 6, "val": 2, "test": 2}
    rng = np.random.default_rng(seed)
    km_per_px = DEG_PER_PX * km_per_degree_latitude()
    crater_id = 0
    with TileDatasetWriter(out_dir, CHANNELS, crs=MOON_CRS, generator="tests/toy_tiles.py") as writer:
        for region, (split, n_tiles) in enumerate(tiles_per_split.items()):
            for t in range(n_tiles):
                n = 0 if (empty_tile_every and t % empty_tile_every == empty_tile_every - 1) else craters_per_tile
                r_px = rng.uniform(*radius_range_px, size=n)
                xy = rng.uniform(0.0, tile_size_px, size=(n, 2))
                craters = np.column_stack([xy, r_px]) if n else np.zeros((0, 3))
                image = render_crater_tile(tile_size_px, tile_size_px, craters, rng)
                col, row = t * tile_size_px, region * tile_size_px
                west, north = col * DEG_PER_PX, -row * DEG_PER_PX
                annotations = []
                for x, y, r in craters:
                    box = np.array([x - r, y - r, x + r, y + r])
                    crater_id += 1
                    annotations.append({
                        "box_xyxy": np.clip(box, 0.0, tile_size_px), "diameter_px": 2 * r,
                        "truncated": bool((box < 0).any() or (box > tile_size_px).any()),
                        "lon": west + x * DEG_PER_PX, "lat": north - y * DEG_PER_PX,
                        "diameter_km": 2 * r * km_per_px, "crater_id": f"toy{crater_id}"})
                writer.add_tile(split, f"r{region}_t{t}", image, transform=from_origin(west, north, DEG_PER_PX,
                                                                                        DEG_PER_PX),
                                region=f"region{region}", window=[col, row, tile_size_px, tile_size_px],
                                annotations=annotations)
        writer.finish(tile_size_px=tile_size_px, levels=[1], source_mosaics={},
                      parameters={"tiles_per_split": dict(tiles_per_split), "radius_range_px": list(radius_range_px),
                                  "craters_per_tile": craters_per_tile, "empty_tile_every": empty_tile_every,
                                  "seed": seed})
    return Path(out_dir)
