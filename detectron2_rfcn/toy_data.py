"""A tiny crater tile dataset in the exact on-disk format of ``etl.tiling.build_dataset``.

For tests and benchmarks that must run without the real tiles: a few seconds to write.
Craters are bowls (DEM) shaded by a sun from the east (DOM) with their slope as a third
channel, so the three bands carry the same kind of signal as the real ones. Each region
(a horizontal strip of tiles) goes to one split, as etl splits by region.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import rasterio
from rasterio.transform import from_origin

__all__ = ["render_crater_tile", "write_toy_crater_dataset"]

CHANNELS = ["dom", "dem", "slope"]


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


def write_toy_crater_dataset(out_dir, *, tiles_per_split: Dict[str, int] = None, tile_size_px: int = 96,
                             radius_range_px: Sequence[float] = (5.0, 16.0), craters_per_tile: int = 4,
                             empty_tile_every: int = 4, seed: int = 0) -> Path:
    """Write ``dataset.json``, ``tiles/<split>/*.tif`` and ``<split>.json`` under ``out_dir``.

    Every ``empty_tile_every``-th tile has no craters; craters may cross the tile edge
    (then their box is clipped and ``truncated`` is true)."""
    tiles_per_split = tiles_per_split or {"train": 6, "val": 2, "test": 2}
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    crs_wkt = 'GEOGCS["Moon 2000",DATUM["D_Moon_2000",SPHEROID["Moon_2000_IAU_IAG",1737400.0,0.0]],' \
              'PRIMEM["Greenwich",0],UNIT["Decimal_Degree",0.0174532925199433]]'
    deg_per_px = 0.001
    stats = []
    crater_id = 0
    for region, (split, n_tiles) in enumerate(tiles_per_split.items()):
        (out / "tiles" / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for t in range(n_tiles):
            tile_id = f"r{region}_t{t}"
            n = 0 if (empty_tile_every and t % empty_tile_every == empty_tile_every - 1) else craters_per_tile
            r_px = rng.uniform(*radius_range_px, size=n)
            xy = rng.uniform(0.0, tile_size_px, size=(n, 2))
            craters = np.column_stack([xy, r_px]) if n else np.zeros((0, 3))
            image = render_crater_tile(tile_size_px, tile_size_px, craters, rng)
            if split == "train":
                stats.append(image.reshape(3, -1))
            west, north = t * tile_size_px * deg_per_px, -region * tile_size_px * deg_per_px
            transform = from_origin(west, north, deg_per_px, deg_per_px)
            rel = f"tiles/{split}/{tile_id}.tif"
            with rasterio.open(out / rel, "w", driver="GTiff", height=tile_size_px, width=tile_size_px, count=3,
                               dtype="float32", crs=crs_wkt, transform=transform) as dst:
                dst.write(image)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": rel, "height": tile_size_px, "width": tile_size_px,
                           "level": 1, "region": f"region{region}", "window": [t * tile_size_px, 0,
                                                                               tile_size_px, tile_size_px]})
            for x, y, r in craters:
                x0, y0 = max(x - r, 0.0), max(y - r, 0.0)
                x1, y1 = min(x + r, tile_size_px), min(y + r, tile_size_px)
                truncated = bool(x - r < 0 or y - r < 0 or x + r > tile_size_px or y + r > tile_size_px)
                crater_id += 1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "category_id": 1, "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                    "lon": west + x * deg_per_px, "lat": north - y * deg_per_px,
                    "diameter_km": 2 * r * deg_per_px * 30.3, "diameter_px": 2 * r, "truncated": truncated,
                    "crater_id": f"toy{crater_id}",
                })
        (out / f"{split}.json").write_text(json.dumps({
            "images": images, "annotations": annotations, "categories": [{"id": 1, "name": "crater"}]}))
    train = np.concatenate(stats, axis=1) if stats else np.zeros((3, 1))
    (out / "dataset.json").write_text(json.dumps({
        "channels": CHANNELS, "pixel_mean": train.mean(axis=1).tolist(), "pixel_std": train.std(axis=1).tolist(),
        "crs": crs_wkt, "source_mosaics": {}, "levels": [1], "tile_size_px": tile_size_px,
        "splits": dict(tiles_per_split)}))
    return out
