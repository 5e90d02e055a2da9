"""The atlas at scale: a plan of tile chunks, a batched chunk worker, resumable chunk files,
and engines that run the worker in this process or on Ray.

A global mosaic is millions of tiles, so the sweep of :mod:`detectron2_rfcn.atlas` is cut
into a plan: every pyramid level's tile grid (the one rule, :func:`etl.tiling.tile_starts`)
is cut into square blocks of about ``chunk_tiles`` tiles, and each chunk gets an id that is
a hash of what decides its detections (the mosaics' identity, the model, the sweep settings,
the chunk's level, index and windows). A chunk's detections, in lunar coordinates, are
written once as ``WORK/chunks/<chunk_id>.parquet`` (to a temporary name, then renamed, so
a file that exists is complete); a run skips every chunk whose file exists, so an
interrupted atlas resumes where it stopped. :mod:`detectron2_rfcn.atlas_merge` then merges
the chunk files block by block into the atlas.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from detectron2_rfcn.atlas import AtlasSettings, _keep_tile_boxes
from etl.geometry import PixelGrid, boxes_px_to_craters
from etl.tiling import tile_starts

logger = logging.getLogger(__name__)

#: Columns of a chunk file: the atlas's columns without ``crater_id`` (assigned after the merge).
DETECTION_COLUMNS: dict[str, str] = {
    "lon": "float64", "lat": "float64", "diameter_km": "float64", "score": "float64",
    "x0_px": "float64", "y0_px": "float64", "x1_px": "float64", "y1_px": "float64",  # level-0 pixels
    "level": "int32",
}
ENGINES: tuple[str, ...] = ("inprocess", "ray")


@dataclass(frozen=True)
class ScaleSettings:
    """How the sweep is cut and run (none of these change the detections, so none is in a chunk id
    except through the chunk's windows)."""

    chunk_tiles: int = 256        # tiles per chunk (a square block of the level's tile grid)
    batch_size: int = 4           # tiles per forward pass
    prefetch_batches: int = 2     # batches read ahead by the reader thread
    merge_block_px: int = 16384   # side of a merge block, level-0 pixels

    def __post_init__(self):
        for name in ("chunk_tiles", "batch_size", "prefetch_batches", "merge_block_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Chunk:
    """A spatially compact block of one level's tiles."""

    chunk_id: str
    level: int                                       # pyramid downsample factor
    index: int                                       # within its level, row-major over blocks
    windows: tuple[tuple[int, int, int, int], ...]   # (col_off, row_off, width, height), level pixels

    def footprint_level0_px(self) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1) covered by the chunk's tiles, in level-0 pixels."""
        w = np.asarray(self.windows)
        f = self.level
        return (int(w[:, 0].min()) * f, int(w[:, 1].min()) * f,
                int((w[:, 0] + w[:, 2]).max()) * f, int((w[:, 1] + w[:, 3]).max()) * f)


@dataclass(frozen=True)
class AtlasPlan:
    """Every chunk of a mosaic's sweep, and the key of the inputs that their ids derive from."""

    inputs_key: str
    width_px: int          # level-0 grid
    height_px: int
    chunks: tuple[Chunk, ...]

    @property
    def n_tiles(self) -> int:
        return sum(len(c.windows) for c in self.chunks)


def _sha256(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def file_identity(path: str | Path) -> dict:
    """What identifies a mosaic cheaply: its resolved path, size and modification time (hashing
    terabytes of mosaic would cost more than a chunk's inference)."""
    st = Path(path).resolve().stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_key(cfg, weights: str | Path | None) -> str:
    """Hash of a model: its config (the device left out: CPU and GPU chunks are interchangeable)
    and the content of its weights file."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "any"
    h = hashlib.sha256(cfg.dump().encode())
    if weights:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _detection_settings(settings: AtlasSettings) -> dict:
    """The settings that decide a chunk's detections (levels enter per chunk; the merge's
    ``nms_iou`` does not enter)."""
    d = asdict(settings)
    d.pop("levels")
    d.pop("nms_iou")
    return d


def plan_atlas(dom_path: str | Path, dem_path: str | Path, model: str, *, width_px: int, height_px: int,
               settings: AtlasSettings = AtlasSettings(), scale: ScaleSettings = ScaleSettings()) -> AtlasPlan:
    """The plan of a mosaic of ``width_px`` x ``height_px`` level-0 pixels: each level's tile grid
    cut into square blocks of ``isqrt(chunk_tiles)`` tiles a side (row-major), each chunk's id a
    hash of the mosaics' identity, ``model`` (see :func:`model_key`), the detection settings,
    the chunk's level, index and windows."""
    inputs = {"mosaics": [file_identity(dom_path), file_identity(dem_path)], "model": model,
              "settings": _detection_settings(settings)}
    inputs_key = _sha256(inputs)
    side = max(1, math.isqrt(scale.chunk_tiles))
    stride = settings.tile_size_px - settings.overlap_px
    chunks = []
    for level in settings.levels:
        grid_w, grid_h = math.ceil(width_px / level), math.ceil(height_px / level)
        rows = tile_starts(grid_h, settings.tile_size_px, stride)
        cols = tile_starts(grid_w, settings.tile_size_px, stride)
        index = 0
        for r0 in range(0, len(rows), side):
            for c0 in range(0, len(cols), side):
                windows = tuple((col, row, w, h) for row, h in rows[r0:r0 + side] for col, w in cols[c0:c0 + side])
                chunk_id = _sha256({"inputs": inputs_key, "level": level, "index": index, "windows": windows})[:24]
                chunks.append(Chunk(chunk_id, int(level), index, windows))
                index += 1
    return AtlasPlan(inputs_key, int(width_px), int(height_px), tuple(chunks))


def plan_mosaic(dom_path: str | Path, dem_path: str | Path, model: str, *, settings: AtlasSettings = AtlasSettings(),
                scale: ScaleSettings = ScaleSettings(), assume_crs=None) -> AtlasPlan:
    """:func:`plan_atlas` for the DOM's own grid."""
    from etl.rasters import open_raster

    with open_raster(dom_path, assume_crs=assume_crs) as ds:
        width_px, height_px = ds.width, ds.height
    return plan_atlas(dom_path, dem_path, model, width_px=width_px, height_px=height_px, settings=settings,
                      scale=scale)


__all__: Sequence[str] = ["AtlasPlan", "Chunk", "DETECTION_COLUMNS", "ENGINES", "ScaleSettings", "file_identity",
                          "model_key", "plan_atlas", "plan_mosaic"]
