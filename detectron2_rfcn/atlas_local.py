"""Atlas inference on tiles in a projection centred on each tile (``etl.local_tiles``).

For global or high-latitude mosaics in simple cylindrical (LOLA, SLDEM): every tile is read by
warping the mosaic into an azimuthal equidistant grid centred on the tile, so a crater is round
whatever its latitude, tiles straddle +-180 like any other place, and the poles are tiles like
others. A tile's boxes go back to lon/lat through its own grid
(``etl.geometry.boxes_px_to_craters``); the craters of all tiles and levels are then merged in
lunar coordinates by the crater-aware merge of ``atlas_merge`` (etl.matching's rule), so a
crater seen by two tiles (on both sides of the antimeridian, or at two levels) is one crater.
Which boxes a tile keeps follows ``atlas``: wholly inside the tile (the overlap holds every
crater up to ``max_diameter_px`` whole in some tile) and within the level's diameter range.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from detectron2_rfcn.atlas import AtlasSettings, _keep_tile_boxes
from etl.geometry import PixelGrid, boxes_px_to_craters
from etl.local_tiles import LonLatBox, plan_local_tiles
from etl.rasters import DEM_CHANNELS, model_channels, open_raster, read_onto_grid

__all__ = ["GLOBE", "detect_local", "write_local_atlas"]

#: Every longitude and latitude.
GLOBE = LonLatBox(-180.0, -90.0, 180.0, 90.0)

_COLUMNS = ["lon", "lat", "diameter_km", "score", "x0_px", "y0_px", "x1_px", "y1_px", "level", "tile_lon0",
            "tile_lat0"]


def detect_local(predictor: Callable[[np.ndarray, PixelGrid], tuple[np.ndarray, np.ndarray]], *,
                 dem_path: str | Path | None, dom_path: str | Path | None = None, pixel_size_m: float,
                 channels: Sequence[str] = ("hillshade", "slope", "dem"), settings: AtlasSettings = AtlasSettings(),
                 regions: Sequence[LonLatBox] = (GLOBE,), sun_azimuth_deg: float | None = None,
                 sun_elevation_deg: float | None = None, assume_crs=None, merge: bool = True,
                 progress: bool = True) -> pd.DataFrame:
    """Every crater of ``regions``: lon, lat, diameter_km, score, the box in its tile's pixels,
    level and the tile's centre.

    ``predictor(channels, tile_grid) -> (boxes_xyxy_px, scores)`` sees one local tile at a time;
    ``channels`` must be the model's (``cfg.MODEL.RFCN.INPUT_CHANNELS``); the tiles' sun must be
    the training tiles' (the defaults of ``etl.rasters`` unless the dataset says otherwise).
    Level-1 pixels are ``pixel_size_m``. ``merge=False`` returns every tile's detections."""
    from detectron2_rfcn.atlas_merge import merge_craters

    kwargs = {k: v for k, v in (("sun_azimuth_deg", sun_azimuth_deg), ("sun_elevation_deg", sun_elevation_deg))
              if v is not None}
    tiles = [t for box in regions for t in plan_local_tiles(box, pixel_size_m=pixel_size_m,
                                                            tile_size_px=settings.tile_size_px,
                                                            overlap_px=settings.overlap_px, levels=settings.levels)]
    needs_dem = any(c in DEM_CHANNELS for c in channels)
    if needs_dem and dem_path is None:
        raise ValueError(f"channels {list(channels)} need a DEM")
    if "dom" in channels and dom_path is None:
        raise ValueError("channel 'dom' needs a DOM")
    dem_ds = open_raster(dem_path, assume_crs=assume_crs) if needs_dem else None
    dom_ds = open_raster(dom_path, assume_crs=assume_crs) if "dom" in channels else None
    frames = []
    try:
        for tile in tqdm(tiles, desc="atlas tiles", unit="tile", disable=not progress):
            grid = tile.grid
            dem = read_onto_grid(dem_ds, grid) if dem_ds is not None else None
            dom = read_onto_grid(dom_ds, grid) if dom_ds is not None else None
            if all(layer is None or np.ma.getmaskarray(layer).all() for layer in (dem, dom)):
                continue
            boxes, scores = predictor(model_channels(dom, dem, grid, channels=channels, **kwargs), grid)
            boxes, scores = np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, dtype=float)
            keep = (scores >= settings.score_threshold) & _keep_tile_boxes(boxes, grid.width, grid.height, settings)
            if not keep.any():
                continue
            lon, lat, diameter_km = boxes_px_to_craters(grid, boxes[keep])
            b = boxes[keep]
            frames.append(pd.DataFrame({
                "lon": lon, "lat": lat, "diameter_km": diameter_km, "score": scores[keep],
                "x0_px": b[:, 0], "y0_px": b[:, 1], "x1_px": b[:, 2], "y1_px": b[:, 3],
                "level": np.full(len(b), tile.level, dtype=np.int32),
                "tile_lon0": tile.lon0, "tile_lat0": tile.lat0}))
    finally:
        for ds in (dem_ds, dom_ds):
            if ds is not None:
                ds.close()
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int32" if c == "level" else "float64") for c in _COLUMNS})
    detections = pd.concat(frames, ignore_index=True)
    return merge_craters(detections).reset_index(drop=True) if merge else detections


def write_local_atlas(cfg, weights: str | None, out_path: str | Path, *, dem_path: str | Path | None,
                      dom_path: str | Path | None = None, run_name: str, pixel_size_m: float,
                      settings: AtlasSettings = AtlasSettings(), regions: Sequence[LonLatBox] = (GLOBE,),
                      sun_azimuth_deg: float | None = None, sun_elevation_deg: float | None = None, assume_crs=None,
                      progress: bool = True) -> pd.DataFrame:
    """:func:`detect_local` with the model of ``cfg`` (its ``MODEL.RFCN.INPUT_CHANNELS``) and
    ``weights``, written as an atlas file with its provenance. The atlas contract's boxes are in
    the mosaic's level-0 pixels: each crater's rim projected into the DEM's (else the DOM's) grid."""
    from detectron2_rfcn.atlas import CraterPredictor, atlas_provenance
    from etl.contracts import write_atlas
    from etl.geometry import crater_boxes_px

    atlas = detect_local(CraterPredictor.from_config(cfg, weights), dem_path=dem_path, dom_path=dom_path,
                         pixel_size_m=pixel_size_m, channels=list(cfg.MODEL.RFCN.INPUT_CHANNELS), settings=settings,
                         regions=regions, sun_azimuth_deg=sun_azimuth_deg, sun_elevation_deg=sun_elevation_deg,
                         assume_crs=assume_crs, progress=progress)
    with open_raster(dem_path or dom_path, assume_crs=assume_crs) as ds:
        mosaic = PixelGrid.from_dataset(ds, assume_crs=assume_crs)
    boxes = (crater_boxes_px(mosaic, atlas["lon"], atlas["lat"], atlas["diameter_km"]) if len(atlas)
             else np.zeros((0, 4)))
    atlas = atlas.drop(columns=["tile_lon0", "tile_lat0"]).assign(
        x0_px=boxes[:, 0], y0_px=boxes[:, 1], x1_px=boxes[:, 2], y1_px=boxes[:, 3])
    return write_atlas(atlas, out_path, atlas_provenance(cfg, weights, run_name, dom_path, dem_path))
