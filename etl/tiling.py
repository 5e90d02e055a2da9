"""Cut DOM + DEM mosaics and a crater catalogue into a Detectron2-ready tile dataset.

A pyramid of levels (downsample factors) makes every crater 10-300 px wide
somewhere: a crater is a label at a level only when its projected diameter there is
within [min_diameter_px, max_diameter_px]. Each level is cut into overlapping
tiles, read window by window (never the whole mosaic). Train / val / test are split
by region: the mosaic is partitioned into square regions, runs of neighbouring
regions go to each split, and a tile is kept only if its whole footprint lies in
one split's regions, so tiles of different splits never overlap.

The dataset is written through the one tile-dataset writer, whose module
(:mod:`etl.tile_dataset`) is the format's contract; on top of it this writer records, in
``dataset.json``, the regions (``regions``) and the level-0 grid (``level0``).

The DEM must cover the DOM: a DEM that does not overlap it is refused, and where it covers
only part of it, tiles without elevation (less than ``min_valid_fraction`` of their pixels
with both DOM and DEM) are left out, never filled, and the summary says how much of the
DOM the DEM covers.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from etl.tile_dataset import SPLITS


@dataclass(frozen=True)
class Tile:
    """One tile: its level, window in level pixels, split and region."""

    level: int
    col_off: int
    row_off: int
    width: int
    height: int
    split: str
    region: int

    @property
    def tile_id(self) -> str:
        return f"L{self.level}_c{self.col_off:05d}_r{self.row_off:05d}"

    def window_level0(self) -> list[int]:
        f = self.level
        return [self.col_off * f, self.row_off * f, self.width * f, self.height * f]


@dataclass(frozen=True)
class RegionLayout:
    """Square regions over the level-0 mosaic and the split of each (row-major ids)."""

    size_px: int
    n_rows: int
    n_cols: int
    split_of: tuple[str, ...]

    def region_at(self, col_px: float, row_px: float) -> int:
        r = min(max(int(row_px // self.size_px), 0), self.n_rows - 1)
        c = min(max(int(col_px // self.size_px), 0), self.n_cols - 1)
        return r * self.n_cols + c

    def regions_touched(self, c0: float, r0: float, c1: float, r1: float) -> list[int]:
        """Regions a footprint [c0, c1) x [r0, r1) in level-0 pixels overlaps."""
        rows = range(max(int(r0 // self.size_px), 0), min(int(math.ceil(r1 / self.size_px)), self.n_rows))
        cols = range(max(int(c0 // self.size_px), 0), min(int(math.ceil(c1 / self.size_px)), self.n_cols))
        return [r * self.n_cols + c for r in rows for c in cols]

    def to_json(self) -> dict:
        return {
            "size_px": self.size_px,
            "grid": [self.n_rows, self.n_cols],
            "assignment": {str(i): s for i, s in enumerate(self.split_of)},
            "bounds_px": {str(r * self.n_cols + c): [c * self.size_px, r * self.size_px,
                                                     (c + 1) * self.size_px, (r + 1) * self.size_px]
                          for r in range(self.n_rows) for c in range(self.n_cols)},
        }


@dataclass
class DatasetSummary:
    """What ``build_dataset`` wrote."""

    out_dir: Path
    dataset_json: Path
    tiles: dict[str, int] = field(default_factory=dict)         # per split
    annotations: dict[str, int] = field(default_factory=dict)   # per split
    dropped_straddling: int = 0   # tiles across regions of different splits
    dropped_empty: int = 0        # tiles with too little valid DOM data
    dropped_no_elevation: int = 0  # tiles with valid DOM data but too little DEM under it
    dem_coverage: float | None = 1.0  # fraction of the DOM's footprint that the DEM's covers (None: unknown)


# --------------------------------------------------------------------------- layout


def split_counts(n_regions: int, fractions) -> list[int]:
    """Regions per split: largest-remainder rounding of ``fractions``, at least one region for
    every split with a positive fraction when there are enough regions."""
    f = np.asarray(fractions, dtype=float)
    if len(f) != len(SPLITS) or (f < 0).any() or f.sum() <= 0:
        raise ValueError(f"split fractions must be {len(SPLITS)} non-negative numbers (train, val, test), "
                         f"got {fractions}")
    f = f / f.sum()
    raw = f * n_regions
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: n_regions - counts.sum()]:
        counts[i] += 1
    if n_regions >= int((f > 0).sum()):
        for i in np.flatnonzero((f > 0) & (counts == 0)):
            counts[i] += 1
            counts[int(np.argmax(counts))] -= 1  # taken from the largest split
    return counts.tolist()


def region_layout(width_px: int, height_px: int, region_size_px: int, fractions, seed: int) -> RegionLayout:
    """Regions of ``region_size_px`` over the mosaic; each split gets a run of neighbouring regions
    along a serpentine path (compact areas keep more tiles than scattered ones), the path's start
    chosen by ``seed``."""
    n_rows, n_cols = math.ceil(height_px / region_size_px), math.ceil(width_px / region_size_px)
    path = [r * n_cols + (c if r % 2 == 0 else n_cols - 1 - c) for r in range(n_rows) for c in range(n_cols)]
    path = list(np.roll(path, -int(np.random.default_rng(seed).integers(len(path)))))
    split_of = [""] * len(path)
    k = 0
    for split, count in zip(SPLITS, split_counts(len(path), fractions)):
        for region in path[k:k + count]:
            split_of[region] = split
        k += count
    return RegionLayout(region_size_px, n_rows, n_cols, tuple(split_of))


def tile_starts(length_px: int, tile_px: int, stride_px: int, *, cover_edge: bool = True
                ) -> list[tuple[int, int]]:
    """(offset, size) of tiles along one axis: the one tile-grid rule (datasets and atlas sweeps).

    Tiles start every ``stride_px``. With ``cover_edge`` the last one is flush with the end (so
    the whole axis is covered, the last two overlapping more), and an axis shorter than a tile
    gets one shorter tile; without it, tiles stop before crossing the end (the remainder and an
    axis shorter than a tile get none).
    """
    if length_px <= tile_px:
        return [(0, length_px)] if cover_edge or length_px == tile_px else []
    if not cover_edge:
        return [(s, tile_px) for s in range(0, length_px - tile_px + 1, stride_px)]
    starts = list(range(0, length_px - tile_px, stride_px)) + [length_px - tile_px]
    return [(s, tile_px) for s in starts]


def tile_windows(width_px: int, height_px: int, tile_size_px: int, overlap_px: int, *, cover_edge: bool = True
                 ) -> Iterator[tuple[int, int, int, int]]:
    """(col_off, row_off, width, height) of the tiles of a grid, row by row (:func:`tile_starts`
    on both axes, stride ``tile_size_px - overlap_px``)."""
    stride = tile_size_px - overlap_px
    for row, height in tile_starts(height_px, tile_size_px, stride, cover_edge=cover_edge):
        for col, width in tile_starts(width_px, tile_size_px, stride, cover_edge=cover_edge):
            yield col, row, width, height


def _shifted_starts(start: int, size: int, length: int, boundaries: np.ndarray) -> list[int]:
    """Offsets that move a tile crossing region boundaries flush against them: ending at the first
    boundary it crosses, or starting at the last (when that stays inside the axis)."""
    inside = boundaries[(boundaries > start) & (boundaries < start + size)]
    if not len(inside):
        return [start]
    options = []
    before, after = int(math.floor(inside[0])) - size, int(math.ceil(inside[-1]))
    if before >= 0:
        options.append(before)
    if after + size <= length:
        options.append(after)
    return options


def plan_tiles(width_px: int, height_px: int, layout: RegionLayout, *, levels=(1, 2, 4), tile_size_px: int = 512,
               overlap_px: int = 64) -> tuple[list[Tile], int]:
    """Tiles of every level whose footprint lies in one split's regions, and how many could not.

    Tiles sit on a regular grid (stride ``tile_size_px - overlap_px``, the last flush with the
    edge); a grid tile that crosses into another split's region is moved flush against the
    region boundary when that fits, so the data near split boundaries is not lost.
    """
    if not 0 <= overlap_px < tile_size_px:
        raise ValueError(f"need 0 <= overlap_px < tile_size_px, got {overlap_px}, {tile_size_px}")
    tiles, seen, straddling = [], set(), 0

    def footprint_split(f, col_off, row_off, w, h):
        c0, r0 = col_off * f, row_off * f
        c1, r1 = min((col_off + w) * f, width_px), min((row_off + h) * f, height_px)
        splits = {layout.split_of[i] for i in layout.regions_touched(c0, r0, c1, r1)}
        return (splits.pop(), layout.region_at((c0 + c1) / 2.0, (r0 + r1) / 2.0)) if len(splits) == 1 else None

    for f in levels:
        lw, lh = math.ceil(width_px / f), math.ceil(height_px / f)
        x_bounds = np.arange(1, layout.n_cols) * layout.size_px / f
        y_bounds = np.arange(1, layout.n_rows) * layout.size_px / f
        for col_off, row_off, w, h in tile_windows(lw, lh, tile_size_px, overlap_px):
            placed = False
            candidates = [(col_off, row_off)]
            if footprint_split(f, col_off, row_off, w, h) is None:
                candidates = [(c, r) for r in _shifted_starts(row_off, h, lh, y_bounds)
                              for c in _shifted_starts(col_off, w, lw, x_bounds)]
            for c, r in candidates:
                found = footprint_split(f, c, r, w, h)
                if found is None:
                    continue
                placed = True
                if (f, c, r) not in seen:
                    seen.add((f, c, r))
                    tiles.append(Tile(int(f), c, r, w, h, found[0], found[1]))
            straddling += not placed
    return tiles, straddling


# --------------------------------------------------------------------------- labels


def tile_annotations(boxes_px: np.ndarray, diameter_px: np.ndarray, tile: Tile, *, min_diameter_px: float,
                     max_diameter_px: float, min_visible_fraction: float) -> list[tuple[int, np.ndarray, bool]]:
    """Craters labelled in ``tile``: (index, XYXY box in tile pixels clipped to it, truncated).

    ``boxes_px`` are XYXY boxes in the tile's level grid. A crater whose diameter at this level
    is out of range is no label here; one whose box the tile edge cuts keeps its clipped box and
    ``truncated=True`` if at least ``min_visible_fraction`` of the box area is inside, else it
    is dropped.
    """
    x0 = boxes_px[:, 0] - tile.col_off
    y0 = boxes_px[:, 1] - tile.row_off
    x1 = boxes_px[:, 2] - tile.col_off
    y1 = boxes_px[:, 3] - tile.row_off
    with np.errstate(invalid="ignore"):
        cand = (np.isfinite(boxes_px).all(axis=1) & (diameter_px >= min_diameter_px)
                & (diameter_px <= max_diameter_px) & (x1 > 0) & (y1 > 0) & (x0 < tile.width) & (y0 < tile.height))
    out = []
    for i in np.flatnonzero(cand):
        box = np.array([x0[i], y0[i], x1[i], y1[i]])
        clipped = np.clip(box, 0.0, [tile.width, tile.height, tile.width, tile.height])
        area = (box[2] - box[0]) * (box[3] - box[1])
        inside = (clipped[2] - clipped[0]) * (clipped[3] - clipped[1])
        if area <= 0:
            continue
        frac = inside / area
        if frac >= 1.0 - 1e-9:
            out.append((int(i), box, False))
        elif frac >= min_visible_fraction:
            out.append((int(i), clipped, True))
    return out


def _load_catalogue(catalogue, catalogue_options: dict | None) -> pd.DataFrame:
    from etl.catalogue import read_catalogue, validate_catalogue

    opts = dict(catalogue_options or {})
    if isinstance(catalogue, pd.DataFrame):
        df = validate_catalogue(catalogue, source=opts.pop("source", "catalogue"), **opts)
    else:
        df = read_catalogue(catalogue, **opts)
    if "crater_id" not in df.columns:
        df = df.assign(crater_id=np.arange(len(df)))
    return df


# --------------------------------------------------------------------------- writing


def build_dataset(dom_path, dem_path, catalogue, out_dir, *, tile_size_px: int = 512, overlap_px: int = 64,
                  levels=(1, 2, 4), min_diameter_px: float = 8.0, max_diameter_px: float = 300.0,
                  split_fractions=(0.7, 0.15, 0.15), region_size_px: int | None = None, seed: int = 0,
                  assume_crs=None, min_visible_fraction: float = 0.5, min_valid_fraction: float = 0.5,
                  catalogue_options: dict | None = None, progress: bool = True) -> DatasetSummary:
    """Write the tile dataset (see the module docstring) and return a summary.

    ``catalogue`` is a DataFrame (lon, lat, diameter_km[, crater_id, age_class]) or a file that
    :func:`etl.catalogue.read_catalogue` reads with ``catalogue_options`` (column names etc.).
    ``region_size_px`` (level-0 pixels) defaults to twice the tile size, or less on a small mosaic
    (a quarter of its shorter side, at least one tile) so every split gets regions. Tiles with less than
    ``min_valid_fraction`` pixels valid in both DOM and DEM are left out. Images without craters are kept.
    Raises :class:`etl.rasters.RasterError` when the DEM does not overlap the DOM (or has no
    elevation under any tile); nothing is written then, nor on any other error.
    """
    from tqdm import tqdm

    from etl.geometry import PixelGrid, crater_boxes_px
    from etl.rasters import CHANNELS, RasterError, footprint_coverage, model_channels, open_raster, read_aligned
    from etl.tile_dataset import TileDatasetWriter

    levels = tuple(sorted({int(f) for f in levels}))
    if not levels or levels[0] < 1:
        raise ValueError(f"levels must be downsample factors >= 1, got {levels}")
    if not 0 < min_diameter_px < max_diameter_px:
        raise ValueError(f"need 0 < min_diameter_px < max_diameter_px, got {min_diameter_px}, {max_diameter_px}")
    cat = _load_catalogue(catalogue, catalogue_options)
    lon, lat, diam_km = (cat[c].to_numpy(dtype=float) for c in ("lon", "lat", "diameter_km"))
    has_age = "age_class" in cat.columns

    with open_raster(dom_path, assume_crs=assume_crs) as dom_ds, open_raster(dem_path, assume_crs=assume_crs) as dem_ds:
        coverage = footprint_coverage(dom_ds, dem_ds)
        if coverage is not None and coverage <= 0.0:
            raise RasterError(f"{dem_path}: the DEM does not overlap the DOM {dom_path} (DEM bounds "
                              f"{tuple(round(v) for v in dem_ds.bounds)} in {dem_ds.crs.to_string()!r}, DOM bounds "
                              f"{tuple(round(v) for v in dom_ds.bounds)} in {dom_ds.crs.to_string()!r}); "
                              "a tile needs both")
        base = PixelGrid.from_dataset(dom_ds, assume_crs=assume_crs)
        region_size = int(region_size_px or min(2 * tile_size_px, max(tile_size_px, min(base.width, base.height) // 4)))
        layout = region_layout(base.width, base.height, region_size, split_fractions, seed)
        tiles, straddling = plan_tiles(base.width, base.height, layout, levels=levels, tile_size_px=tile_size_px,
                                       overlap_px=overlap_px)
        level_boxes = {}
        for f in levels:
            boxes = crater_boxes_px(base.downsampled(f), lon, lat, diam_km) if len(cat) else np.zeros((0, 4))
            with np.errstate(invalid="ignore"):
                level_boxes[f] = (boxes, np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))

        empty = no_elevation = 0
        with TileDatasetWriter(out_dir, CHANNELS, crs=base.crs, generator="etl.tiling.build_dataset") as writer:
            for tile in tqdm(tiles, desc="tiles", unit="tile", disable=not progress):
                grid = base.downsampled(tile.level).window(tile.col_off, tile.row_off, tile.width, tile.height)
                dom, dem = read_aligned(dom_ds, dem_ds, grid)
                dom_valid = ~np.ma.getmaskarray(dom)
                valid = dom_valid & ~np.ma.getmaskarray(dem)
                if valid.mean() < min_valid_fraction:
                    # A DOM tile without elevation under it is left out, never given flat zeros.
                    no_elevation += dom_valid.mean() >= min_valid_fraction
                    empty += dom_valid.mean() < min_valid_fraction
                    continue
                boxes, diam_px = level_boxes[tile.level]
                annotations = []
                for i, box, truncated in tile_annotations(boxes, diam_px, tile, min_diameter_px=min_diameter_px,
                                                          max_diameter_px=max_diameter_px,
                                                          min_visible_fraction=min_visible_fraction):
                    ann = {"box_xyxy": box, "truncated": truncated, "diameter_px": diam_px[i], "lon": lon[i],
                           "lat": lat[i], "diameter_km": diam_km[i], "crater_id": cat["crater_id"].iloc[i]}
                    if has_age:
                        ann["age_class"] = cat["age_class"].iloc[i]
                    annotations.append(ann)
                writer.add_tile(tile.split, tile.tile_id, model_channels(dom, dem, grid),
                                transform=grid.transform, level=tile.level, region=tile.region,
                                window=tile.window_level0(), annotations=annotations, valid=valid)
            if tiles and not writer.n_tiles and no_elevation:
                raise RasterError(f"{dem_path}: the DEM has elevation under none of the {len(tiles)} tiles of the "
                                  f"DOM {dom_path}")
            parameters = {
                "catalogue": "<DataFrame>" if isinstance(catalogue, pd.DataFrame) else os.path.abspath(catalogue),
                "n_craters": int(len(cat)), "tile_size_px": int(tile_size_px), "overlap_px": int(overlap_px),
                "levels": list(levels), "min_diameter_px": float(min_diameter_px),
                "max_diameter_px": float(max_diameter_px), "split_fractions": [float(v) for v in split_fractions],
                "region_size_px": region_size, "seed": int(seed), "assume_crs": None if assume_crs is None
                else str(assume_crs), "min_visible_fraction": float(min_visible_fraction),
                "min_valid_fraction": float(min_valid_fraction),
                "dem_coverage": None if coverage is None else round(float(coverage), 6),
                "dropped_straddling_tiles": straddling, "dropped_empty_tiles": int(empty),
                "dropped_no_elevation_tiles": int(no_elevation),
            }
            meta = writer.finish(
                tile_size_px=tile_size_px, levels=levels,
                source_mosaics={"dom": os.path.abspath(dom_path), "dem": os.path.abspath(dem_path)},
                parameters=parameters,
                extra={"overlap_px": int(overlap_px), "regions": layout.to_json(),
                       "level0": {"width": base.width, "height": base.height,
                                  "transform": list(base.transform)[:6], "pixel_size_m": base.pixel_size_m}})
    out = Path(out_dir)
    return DatasetSummary(out_dir=out, dataset_json=out / "dataset.json", tiles=dict(meta["splits"]),
                          annotations=dict(meta["annotations"]), dropped_straddling=straddling,
                          dropped_empty=int(empty), dropped_no_elevation=int(no_elevation),
                          dem_coverage=coverage)


__all__ = ["DatasetSummary", "RegionLayout", "SPLITS", "Tile", "build_dataset", "plan_tiles", "region_layout",
           "split_counts", "tile_annotations", "tile_starts", "tile_windows"]
