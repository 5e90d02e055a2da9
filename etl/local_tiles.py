"""Tiles in a projection centred on each tile: craters round at every latitude, on both sides
of +-180 and at the poles; spatial splits as lon/lat boxes.

A global mosaic in simple cylindrical (LOLA, SLDEM) stretches a crater at 60 degrees to twice
its height, and its tiles stop at the antimeridian. DeepMoon's remedy, used here: every tile is
its own grid in an azimuthal equidistant projection centred on the tile's centre (true
distances from the centre, scale within 0.4 % of 1 over a 500 km tile), read from the mosaic by
warping (``etl.rasters.read_onto_grid``); boxes found in a tile go back to lon/lat through that
tile's grid (``etl.geometry.boxes_px_to_craters``). Tile centres are laid out in lon/lat: rows
one tile stride apart in latitude, tiles of a row one stride apart on the ground along the
row's equatorward edge (so neighbours overlap by at least the overlap everywhere in the row);
a box spanning all longitudes wraps, so tiles straddle +-180 like any other place.

Spatial selection: train, val and test are lists of :class:`LonLatBox`; a tile belongs to a
split only when its whole footprint lies in one of that split's boxes (and in the labelled
region, outside which a catalogue says nothing, so nothing there may be taught as background).
Boxes of different splits must not overlap, so tiles of different splits never do.

Completeness: a catalogue complete above ``complete_above_km`` (Head et al. 2010: 20 km)
labels no smaller crater, so smaller craters are unlabelled, not background: each tile records
``ignore_below_px`` (the limit at its resolution), below which the detector's training treats an
unmatched box as neither crater nor background and scoring does not count it.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from affine import Affine
from rasterio.crs import CRS

from etl.moon import MOON_RADIUS_M, great_circle_distance_m, normalize_lon

__all__ = ["LonLatBox", "LocalTile", "build_local_dataset", "check_disjoint", "local_crs", "parse_boxes",
           "plan_local_tiles", "tile_footprint_lonlat"]


@dataclass(frozen=True)
class LonLatBox:
    """A lon/lat box, degrees. ``lon_min > lon_max`` crosses the antimeridian (170,-10,-170,10);
    (-180, .., 180, ..) spans every longitude."""

    lon_min: float
    lat_min: float
    lon_max: float
    lat_max: float

    def __post_init__(self):
        if not -90.0 <= self.lat_min < self.lat_max <= 90.0:
            raise ValueError(f"box {self}: need -90 <= lat_min < lat_max <= 90")
        if not (-180.0 <= self.lon_min <= 180.0 and -180.0 <= self.lon_max <= 180.0) or self.lon_min == self.lon_max:
            raise ValueError(f"box {self}: longitudes must be distinct, in -180..180")

    @classmethod
    def parse(cls, text: str) -> "LonLatBox":
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            values = []
        if len(values) != 4:
            raise ValueError(f"a lon/lat box is lon_min,lat_min,lon_max,lat_max (degrees); got {text!r}")
        return cls(*values)

    @property
    def all_longitudes(self) -> bool:
        return self.lon_min == -180.0 and self.lon_max == 180.0

    @property
    def lon_span_deg(self) -> float:
        return (self.lon_max - self.lon_min) % 360.0 or 360.0

    def contains(self, lon_deg, lat_deg) -> np.ndarray:
        """Whether each point lies in the box (edges included)."""
        lon = np.asarray(normalize_lon(np.asarray(lon_deg, dtype=float)))
        lat = np.asarray(lat_deg, dtype=float)
        in_lat = (lat >= self.lat_min - 1e-9) & (lat <= self.lat_max + 1e-9)
        if self.all_longitudes:
            return in_lat
        offset = (lon - self.lon_min) % 360.0
        # -180 and 180 are one meridian: a point on it is at offset 0 or 360 - tiny.
        return in_lat & ((offset <= self.lon_span_deg + 1e-9) | (offset >= 360.0 - 1e-9))

    def overlaps(self, other: "LonLatBox") -> bool:
        """Whether the two boxes share an area (touching edges do not count)."""
        if self.lat_max <= other.lat_min or other.lat_max <= self.lat_min:
            return False
        a0, b0 = self.lon_min % 360.0, other.lon_min % 360.0
        a1, b1 = a0 + self.lon_span_deg, b0 + other.lon_span_deg
        return any(a0 < b1 + k and b0 + k < a1 for k in (-360.0, 0.0, 360.0))

    def to_json(self) -> list[float]:
        return [self.lon_min, self.lat_min, self.lon_max, self.lat_max]


def parse_boxes(text: str | None) -> tuple[LonLatBox, ...]:
    """Boxes from 'lon_min,lat_min,lon_max,lat_max[;...]' ('' or None: none)."""
    if not text:
        return ()
    return tuple(LonLatBox.parse(part) for part in text.split(";") if part.strip())


def check_disjoint(regions: dict[str, Sequence[LonLatBox]]) -> None:
    """Raise ValueError when boxes of two different splits overlap."""
    names = list(regions)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for box_a in regions[a]:
                for box_b in regions[b]:
                    if box_a.overlaps(box_b):
                        raise ValueError(f"the {a} box {box_a.to_json()} overlaps the {b} box {box_b.to_json()}: "
                                         "tiles of different splits must never overlap")


def local_crs(lon0_deg: float, lat0_deg: float) -> CRS:
    """Azimuthal equidistant projection on the Moon sphere centred on (lon0, lat0), metres."""
    return CRS.from_proj4(f"+proj=aeqd +lat_0={lat0_deg:.10g} +lon_0={normalize_lon(lon0_deg):.10g} "
                          f"+x_0=0 +y_0=0 +R={MOON_RADIUS_M:.10g} +units=m +no_defs +type=crs")


@dataclass(frozen=True)
class LocalTile:
    """A square tile of ``size_px`` pixels of ``pixel_size_m`` centred on (lon0, lat0)."""

    level: int
    lon0: float
    lat0: float
    size_px: int
    pixel_size_m: float
    split: str = ""

    @property
    def tile_id(self) -> str:
        return f"L{self.level}_lon{self.lon0:+09.4f}_lat{self.lat0:+08.4f}"

    @property
    def grid(self):
        from etl.geometry import PixelGrid

        half_m = self.size_px * self.pixel_size_m / 2.0
        transform = Affine(self.pixel_size_m, 0.0, -half_m, 0.0, -self.pixel_size_m, half_m)
        return PixelGrid(local_crs(self.lon0, self.lat0), transform, self.size_px, self.size_px)

    @property
    def half_diagonal_m(self) -> float:
        return self.size_px * self.pixel_size_m / math.sqrt(2.0)


def tile_footprint_lonlat(tile: LocalTile, points_per_side: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat of points along the tile's border."""
    n, s = points_per_side, float(tile.size_px)
    t = np.linspace(0.0, s, n)
    cols = np.concatenate([t, np.full(n, s), t[::-1], np.zeros(n)])
    rows = np.concatenate([np.zeros(n), t, np.full(n, s), t[::-1]])
    return tile.grid.pixel_to_lonlat(cols, rows)


def _axis_centres(start: float, end: float, half: float, stride: float) -> np.ndarray:
    """Centres of tiles of half-size ``half`` every ``stride`` covering [start, end], the last
    flush with the end (the tile-grid rule of etl.tiling.tile_starts, on a continuous axis)."""
    length = end - start
    if length <= 2.0 * half:
        return np.array([(start + end) / 2.0])
    n = int(math.ceil((length - 2.0 * half) / stride - 1e-9)) + 1
    return np.linspace(start + half, end - half, n)


def plan_local_tiles(box: LonLatBox, *, pixel_size_m: float, tile_size_px: int, overlap_px: int,
                     levels: Sequence[int] = (1,), split: str = "") -> list[LocalTile]:
    """Tiles of each level (pixels ``level`` x ``pixel_size_m``) whose footprint lies in ``box``.

    Rows one stride apart in latitude; in a row, tiles one stride apart along the row's
    equatorward edge, flush with the box's edges (at the row's widest longitude extent), or
    evenly around the Moon when the box spans every longitude (so tiles straddle +-180)."""
    if not 0 <= overlap_px < tile_size_px:
        raise ValueError(f"need 0 <= overlap_px < tile_size_px, got {overlap_px}, {tile_size_px}")
    tiles = []
    for level in sorted({int(v) for v in levels}):
        size_m = pixel_size_m * level
        half_deg = math.degrees(tile_size_px * size_m / 2.0 / MOON_RADIUS_M)
        stride_deg = math.degrees((tile_size_px - overlap_px) * size_m / MOON_RADIUS_M)
        for lat0 in _axis_centres(box.lat_min, box.lat_max, half_deg, stride_deg):
            equatorward = max(abs(lat0) - half_deg, 0.0)
            poleward = min(abs(lat0) + half_deg, 89.0)
            lon_stride = stride_deg / math.cos(math.radians(equatorward))
            if box.all_longitudes:
                n = max(int(math.ceil(360.0 / lon_stride - 1e-9)), 1)
                lons = -180.0 + np.arange(n) * 360.0 / n
            else:
                lon_half = min(half_deg / math.cos(math.radians(poleward)), 180.0)
                lons = box.lon_min + _axis_centres(0.0, box.lon_span_deg, lon_half, lon_stride)
            for lon0 in lons:
                tile = LocalTile(level, float(normalize_lon(lon0)), float(lat0), int(tile_size_px), float(size_m),
                                 split)
                if box.contains(*tile_footprint_lonlat(tile)).all():
                    tiles.append(tile)
        # A box around a pole gets a tile centred on it: the rows' tiles end at the pole, so a crater
        # on it would be cut by all of them.
        for pole in (90.0, -90.0):
            if box.all_longitudes and (box.lat_max if pole > 0 else -box.lat_min) >= 90.0 - half_deg:
                tile = LocalTile(level, 0.0, pole, int(tile_size_px), float(size_m), split)
                if box.contains(*tile_footprint_lonlat(tile)).all():
                    tiles.append(tile)
    return tiles


def _in_any(boxes: Sequence[LonLatBox], lon, lat) -> np.ndarray:
    inside = np.zeros(np.shape(lon), dtype=bool)
    for box in boxes:
        inside |= box.contains(lon, lat)
    return inside


def build_local_dataset(dem_path, catalogue, out_dir, *, regions: dict[str, Sequence[LonLatBox]],
                        pixel_size_m: float, dom_path=None, channels: Sequence[str] = ("hillshade", "slope", "dem"),
                        labelled: Sequence[LonLatBox] = (), complete_above_km: float | None = None,
                        tile_size_px: int = 512, overlap_px: int = 128, levels=(1, 2, 4),
                        min_diameter_px: float = 8.0, max_diameter_px: float = 128.0,
                        sun_azimuth_deg: float | None = None, sun_elevation_deg: float | None = None,
                        min_visible_fraction: float = 0.5, min_valid_fraction: float = 0.5, assume_crs=None,
                        catalogue_options: dict | None = None, progress: bool = True):
    """Write a tile dataset of local-projection tiles (module docstring) and return its summary
    (:class:`etl.tiling.DatasetSummary`).

    ``regions`` maps split names to lon/lat boxes (disjoint across splits); ``labelled`` is
    where the catalogue is valid (empty: everywhere). The tile grid comes from the tiles
    themselves, not from the DOM: ``dom_path`` is needed only when ``channels`` has "dom".
    Craters smaller than ``complete_above_km`` are no labels; each image records
    ``ignore_below_px``, its ``crs`` and ``pixel_size_m``.
    """
    from tqdm import tqdm

    from etl.geometry import crater_boxes_px
    from etl.rasters import (DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG, DEM_CHANNELS, RasterError,
                             model_channels, open_raster, read_onto_grid)
    from etl.tile_dataset import SPLITS, TileDatasetWriter
    from etl.tiling import DatasetSummary, Tile, _load_catalogue, tile_annotations

    azimuth = DEFAULT_SUN_AZIMUTH_DEG if sun_azimuth_deg is None else float(sun_azimuth_deg)
    elevation = DEFAULT_SUN_ELEVATION_DEG if sun_elevation_deg is None else float(sun_elevation_deg)
    unknown = set(regions) - set(SPLITS)
    if unknown or not any(regions.values()):
        raise ValueError(f"regions: give lon/lat boxes for some of {SPLITS}, got {sorted(regions)}")
    check_disjoint(regions)
    if "dom" in channels and dom_path is None:
        raise ValueError("channel 'dom' needs a DOM (dom_path)")
    if not any(c in DEM_CHANNELS for c in channels) and dom_path is None:
        raise ValueError(f"channels {list(channels)} need a DOM")
    levels = tuple(sorted({int(f) for f in levels}))
    cat = _load_catalogue(catalogue, catalogue_options)
    if complete_above_km:
        cat = cat[cat["diameter_km"].to_numpy(dtype=float) >= complete_above_km].reset_index(drop=True)
    lon, lat, diam_km = (cat[c].to_numpy(dtype=float) for c in ("lon", "lat", "diameter_km"))
    has_age = "age_class" in cat.columns

    plan = []
    for split, boxes in regions.items():
        for region, box in enumerate(boxes):
            for tile in plan_local_tiles(box, pixel_size_m=pixel_size_m, tile_size_px=tile_size_px,
                                         overlap_px=overlap_px, levels=levels, split=split):
                if not labelled or _in_any(labelled, *tile_footprint_lonlat(tile)).all():
                    plan.append((tile, f"{split}{region}"))
    if not plan:
        raise ValueError("no tile fits in the regions (and the labelled region); give larger boxes or smaller tiles")

    dem_ds = open_raster(dem_path, assume_crs=assume_crs) if any(c in DEM_CHANNELS for c in channels) else None
    dom_ds = open_raster(dom_path, assume_crs=assume_crs) if "dom" in channels else None
    empty = 0
    try:
        with TileDatasetWriter(out_dir, channels, crs=None, generator="etl.local_tiles.build_local_dataset",
                               crs_note="each tile has its own CRS: an azimuthal equidistant projection centred on "
                                        "the tile (in its GeoTIFF and its image's 'crs')") as writer:
            for tile, region in tqdm(plan, desc="tiles", unit="tile", disable=not progress):
                grid = tile.grid
                dem = read_onto_grid(dem_ds, grid) if dem_ds is not None else None
                dom = read_onto_grid(dom_ds, grid) if dom_ds is not None else None
                valid = np.ones(grid.shape, dtype=bool)
                for layer in (dem, dom):
                    if layer is not None:
                        valid &= ~np.ma.getmaskarray(layer)
                if valid.mean() < min_valid_fraction:
                    empty += 1
                    continue
                near = great_circle_distance_m(tile.lon0, tile.lat0, lon, lat) <= tile.half_diagonal_m + diam_km * 500.0
                idx = np.flatnonzero(near)
                annotations = []
                if len(idx):
                    boxes = crater_boxes_px(grid, lon[idx], lat[idx], diam_km[idx])
                    with np.errstate(invalid="ignore"):
                        diam_px = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
                    frame = Tile(tile.level, 0, 0, tile.size_px, tile.size_px, tile.split, 0)
                    for j, box, truncated in tile_annotations(boxes, diam_px, frame, min_diameter_px=min_diameter_px,
                                                              max_diameter_px=max_diameter_px,
                                                              min_visible_fraction=min_visible_fraction):
                        i = idx[j]
                        ann = {"box_xyxy": box, "truncated": truncated, "diameter_px": diam_px[j], "lon": lon[i],
                               "lat": lat[i], "diameter_km": diam_km[i], "crater_id": cat["crater_id"].iloc[i]}
                        if has_age:
                            ann["age_class"] = cat["age_class"].iloc[i]
                        annotations.append(ann)
                pixels = model_channels(dom, dem, grid, channels=channels, sun_azimuth_deg=azimuth,
                                        sun_elevation_deg=elevation)
                extra = {"crs": grid.crs.to_proj4() if hasattr(grid.crs, "to_proj4") else grid.crs.to_string(),
                         "pixel_size_m": tile.pixel_size_m, "lon0": tile.lon0, "lat0": tile.lat0,
                         "sun_elevation_deg": elevation}
                if dem is not None and dem.count():
                    extra["dem_relief_m"] = float(dem.max() - dem.min())
                if complete_above_km:
                    extra["ignore_below_px"] = complete_above_km * 1000.0 / tile.pixel_size_m
                writer.add_tile(tile.split, tile.tile_id, pixels, transform=grid.transform, level=tile.level,
                                region=region, window=[0, 0, tile.size_px, tile.size_px], annotations=annotations,
                                valid=valid, crs=grid.crs, image_extra=extra)
            if not writer.n_tiles:
                raise RasterError(f"{dem_path or dom_path}: no data under any of the {len(plan)} tiles")
            parameters = {
                "catalogue": "<DataFrame>" if isinstance(catalogue, pd.DataFrame) else os.path.abspath(catalogue),
                "n_craters": int(len(cat)), "pixel_size_m": float(pixel_size_m), "tile_size_px": int(tile_size_px),
                "overlap_px": int(overlap_px), "levels": list(levels), "min_diameter_px": float(min_diameter_px),
                "max_diameter_px": float(max_diameter_px), "complete_above_km": complete_above_km,
                "sun_azimuth_deg": azimuth, "sun_elevation_deg": elevation,
                "min_visible_fraction": float(min_visible_fraction), "min_valid_fraction": float(min_valid_fraction),
                "dropped_empty_tiles": int(empty),
            }
            meta = writer.finish(
                tile_size_px=tile_size_px, levels=levels,
                source_mosaics={k: os.path.abspath(v) for k, v in (("dom", dom_path), ("dem", dem_path)) if v},
                parameters=parameters,
                extra={"overlap_px": int(overlap_px), "projection": "local azimuthal equidistant",
                       "regions_lonlat": {s: [b.to_json() for b in boxes] for s, boxes in regions.items()},
                       "labelled_lonlat": [b.to_json() for b in labelled],
                       "complete_above_km": complete_above_km, "pixel_size_m": float(pixel_size_m),
                       "sun_azimuth_deg": azimuth, "sun_elevation_deg": elevation})
    finally:
        for ds in (dem_ds, dom_ds):
            if ds is not None:
                ds.close()
    out = Path(out_dir)
    return DatasetSummary(out_dir=out, dataset_json=out / "dataset.json", tiles=dict(meta["splits"]),
                          annotations=dict(meta["annotations"]), dropped_empty=int(empty), dem_coverage=None)
