"""Atlas inference over whole mosaics: every crater of a study area.

Tiles are independent, so a mosaic of any size is a map over tile windows: each pyramid
level (downsample factor) is cut into overlapping tiles read lazily through ``etl.rasters``,
each tile's detections are moved to the mosaic's level-0 pixel grid, and one class-agnostic
NMS over all tiles and levels keeps one box per crater. Boxes become lon/lat/diameter by
projecting through the mosaic's CRS (``etl.geometry.boxes_px_to_craters``), never by
``size * resolution``.

Which detections a tile may keep: a crater of up to ``max_diameter_px`` (at its level) lies
wholly inside at least one tile when the tile overlap is at least that size, so boxes that
touch a tile edge are partial views and are dropped (craters cut by the mosaic's own edge
cannot be measured and are not mapped); boxes outside the level's diameter range are left
to the level where they fit.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torchvision.ops import nms
from tqdm import tqdm

from etl.geometry import PixelGrid, boxes_px_to_craters
from etl.rasters import model_channels, open_raster, read_aligned
from etl.tiling import tile_windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AtlasSettings:
    """How a mosaic is swept. Lengths in pixels of the level being swept."""

    levels: tuple[int, ...] = (1, 2, 4)   # pyramid downsample factors
    tile_size_px: int = 512               # square tile side
    overlap_px: int = 128                 # >= max_diameter_px, so every crater fits whole in some tile
    min_diameter_px: float = 8.0          # smaller boxes are left to a finer level
    max_diameter_px: float = 128.0        # larger boxes are left to a coarser level
    score_threshold: float = 0.5
    nms_iou: float = 0.5                  # class-agnostic NMS across tiles and levels
    edge_margin_px: float = 2.0           # a box this close to an inner tile edge is a partial view

    def __post_init__(self):
        if self.overlap_px >= self.tile_size_px:
            raise ValueError(f"overlap_px ({self.overlap_px}) must be smaller than tile_size_px ({self.tile_size_px})")
        if self.max_diameter_px > self.overlap_px:
            raise ValueError(
                f"max_diameter_px ({self.max_diameter_px}) > overlap_px ({self.overlap_px}): "
                "craters that large could be cut by every tile")
        if not self.levels or min(self.levels) < 1:
            raise ValueError(f"levels must be downsample factors >= 1, got {self.levels}")


class CraterPredictor:
    """A built Detectron2 model in eval mode: multi-channel arrays in, boxes and scores out.
    ``tta``: names of extra views of each tile (``detectron2_rfcn.tta``; from
    ``TEST.CRATER_TTA.TRANSFORMS``), merged crater by crater; () = the tile alone."""

    def __init__(self, model: torch.nn.Module, tta: Sequence[str] = ()):
        from detectron2_rfcn.tta import TRANSFORMS

        self.model = model.eval()
        self.tta = tuple(tta)
        unknown = [n for n in self.tta if n not in TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown TTA views {unknown}: choose from {sorted(TRANSFORMS)}")

    @classmethod
    def from_config(cls, cfg, weights: str | None = None) -> "CraterPredictor":
        from detectron2.checkpoint import DetectionCheckpointer
        from detectron2.modeling import build_model

        model = build_model(cfg)
        if weights:
            DetectionCheckpointer(model).load(weights)
        tta = cfg.TEST.get("CRATER_TTA", None)
        return cls(model, tta=tuple(tta.TRANSFORMS) if tta is not None else ())

    @torch.no_grad()
    def __call__(self, channels: np.ndarray, tile_grid: PixelGrid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``channels`` float32 (C, H, W) -> boxes (N, 4) XYXY px and scores (N,). The tile's
        grid is part of the predictor protocol (georeferenced predictors, such as a catalogue
        replayed for evaluation, need it); the network does not."""
        return self.predict_batch([channels])[0]

    def _forward(self, channels_list: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        inputs = [{"image": torch.from_numpy(np.ascontiguousarray(c)), "height": c.shape[1], "width": c.shape[2]}
                  for c in channels_list]
        results = []
        for out in self.model(inputs):
            inst = out["instances"].to("cpu")
            results.append((inst.pred_boxes.tensor.numpy().astype(float), inst.scores.numpy().astype(float)))
        return results

    @torch.no_grad()
    def predict_batch(self, channels_list: Sequence[np.ndarray], tile_grids: Sequence[PixelGrid] | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
        """One forward pass over several tiles (give them one shape: the model pads a batch to
        its largest image, and padding is what would make a batched box differ from a lone one);
        one pass per view with TTA."""
        if not self.tta:
            return self._forward(channels_list)
        from detectron2_rfcn.tta import predict_views

        return predict_views(self._forward, channels_list, self.tta)


def _keep_tile_boxes(boxes: np.ndarray, tile_width_px: int, tile_height_px: int,
                     settings: AtlasSettings) -> np.ndarray:
    """Mask of boxes (tile px) wholly inside the tile and within the level's diameter range.

    A box touching a tile edge is a partial view: inside the mosaic, an overlapping tile
    holds the whole crater; at the mosaic's own edge the crater cannot be measured and is
    left out of the atlas."""
    m = settings.edge_margin_px
    x0, y0, x1, y1 = boxes.T
    whole = (x0 >= m) & (y0 >= m) & (x1 <= tile_width_px - m) & (y1 <= tile_height_px - m)
    size_px = np.sqrt(np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None))
    in_range = (size_px >= settings.min_diameter_px) & (size_px <= settings.max_diameter_px)
    return whole & in_range


def detect_mosaic(predictor: Callable[[np.ndarray, PixelGrid], tuple[np.ndarray, np.ndarray]], dom_path: str | Path, dem_path: str | Path, *,
                  settings: AtlasSettings = AtlasSettings(), assume_crs=None,
                  progress: bool = True) -> pd.DataFrame:
    """All craters of a DOM + DEM mosaic: lon, lat, diameter_km, score, level-0 pixel box, level.

    ``predictor(channels, tile_grid) -> (boxes_xyxy_px, scores)`` sees one tile at a time
    (usually a :class:`CraterPredictor`)."""
    boxes_all, scores_all, levels_all = [], [], []
    with open_raster(dom_path, assume_crs=assume_crs) as dom_ds, open_raster(dem_path, assume_crs=assume_crs) as dem_ds:
        grid0 = PixelGrid.from_dataset(dom_ds, assume_crs=assume_crs)
        jobs = []
        for level in settings.levels:
            grid = grid0.downsampled(level)
            jobs += [(level, grid, w) for w in tile_windows(grid.width, grid.height,
                                                             settings.tile_size_px, settings.overlap_px)]
        for level, grid, window in tqdm(jobs, desc="atlas tiles", unit="tile", disable=not progress):
            tile_grid = grid.window(*window)
            dom, dem = read_aligned(dom_ds, dem_ds, tile_grid)
            boxes, scores = predictor(model_channels(dom, dem, tile_grid), tile_grid)
            keep = (scores >= settings.score_threshold) & _keep_tile_boxes(boxes, window[2], window[3], settings)
            if keep.any():
                col, row = window[0], window[1]
                boxes_all.append((boxes[keep] + [col, row, col, row]) * level)
                scores_all.append(scores[keep])
                levels_all.append(np.full(int(keep.sum()), level, dtype=np.int32))
    if not boxes_all:
        return pd.DataFrame(columns=["lon", "lat", "diameter_km", "score", "x0_px", "y0_px", "x1_px", "y1_px", "level"])
    boxes = np.concatenate(boxes_all)
    scores = np.concatenate(scores_all)
    levels = np.concatenate(levels_all)
    keep = nms(torch.as_tensor(boxes, dtype=torch.float64), torch.as_tensor(scores, dtype=torch.float64),
               settings.nms_iou).numpy()
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    lon, lat, diameter_km = boxes_px_to_craters(grid0, boxes)
    return pd.DataFrame({
        "lon": lon, "lat": lat, "diameter_km": diameter_km, "score": scores,
        "x0_px": boxes[:, 0], "y0_px": boxes[:, 1], "x1_px": boxes[:, 2], "y1_px": boxes[:, 3],
        "level": levels,
    })


def write_mosaic_atlas(cfg, weights: str | None, dom_path: str | Path, dem_path: str | Path,
                       out_path: str | Path, *, run_name: str, settings: AtlasSettings = AtlasSettings(),
                       assume_crs=None, progress: bool = True) -> pd.DataFrame:
    """Detect every crater of a mosaic and write the atlas file (GeoPackage/CSV/Parquet by
    suffix) with its provenance. Returns the atlas as written."""
    from etl.contracts import write_atlas

    predictor = CraterPredictor.from_config(cfg, weights)
    atlas = detect_mosaic(predictor, dom_path, dem_path, settings=settings, assume_crs=assume_crs, progress=progress)
    return write_atlas(atlas, out_path, atlas_provenance(cfg, weights, run_name, dom_path, dem_path))


def atlas_provenance(cfg, weights: str | None, run_name: str, *mosaic_paths):
    """How an atlas was made (every atlas writer stamps the same fields): the model with its
    weights file, the config hash, the source mosaics given, and the code version."""
    from etl.contracts import AtlasProvenance
    from etl.provenance import code_version, config_hash, model_name

    return AtlasProvenance(
        run_name=run_name,
        model=model_name(cfg) + (f"@{Path(weights).name}" if weights else ""),
        config_hash=config_hash(cfg),
        source_mosaics=tuple(str(p) for p in mosaic_paths if p),
        code_version=code_version(),
    )


__all__: Sequence[str] = ["AtlasSettings", "CraterPredictor", "atlas_provenance", "detect_mosaic", "write_mosaic_atlas"]
