"""The atlas merge: one crater for the detections of overlapping tiles, chunks and levels.

Two detections are one crater when :func:`etl.matching.is_match` says so (centres within half
the larger diameter on the sphere, diameters within a factor 1.5), the rule that evaluation
and the database use; pixel IoU would split a crater seen at two levels, whose boxes differ in
size by more than IoU tolerates. Greedy, like NMS: detections by decreasing score (ties broken
by level and box, so the order of chunk files never matters); each one kept suppresses the
lower-ranked detections that match it.

Memory stays bounded by a block, not by the mosaic: the level-0 grid is cut into square blocks;
a block reads the chunk files whose footprints reach it, merges the detections whose box
centres lie in the block widened by a halo, and keeps those whose centres lie in the block
itself. A detection's suppressors lie within 0.75 of its diameter (0.5 x the larger one, at
most 1.5 x its own), and no kept box is larger than a tile at the coarsest level, so the
default halo of one such tile holds every detection that can decide a block's craters.

The rule is etl.matching's project rule unless told otherwise: it also makes one crater of
two real ones when one is superposed on another of about its size with its centre within half
a diameter; ``STRICT_RULE`` (a quarter diameter, 1.25x) keeps more of those apart.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from detectron2_rfcn.atlas import AtlasSettings
from detectron2_rfcn.atlas_scale import DETECTION_COLUMNS, AtlasPlan, ScaleSettings, chunk_path, read_chunk
from etl.matching import PROJECT_RULE, MatchRule, is_match, max_match_distance_km
from etl.moon import MOON_RADIUS_M, chord_for_distance, unit_vector


def merge_craters(detections: pd.DataFrame, rule: MatchRule = PROJECT_RULE) -> pd.DataFrame:
    """One row per crater: the greedy crater-aware merge of ``detections`` (chunk-file columns)
    by ``rule``, rows in rank order (score first)."""
    if detections.empty:
        return detections.iloc[:0]
    d = detections
    order = np.lexsort((d["y1_px"].to_numpy(), d["x1_px"].to_numpy(), d["y0_px"].to_numpy(),
                        d["x0_px"].to_numpy(), d["level"].to_numpy(), -d["score"].to_numpy()))
    lon, lat, diam = (d[c].to_numpy(dtype=float)[order] for c in ("lon", "lat", "diameter_km"))
    from scipy.spatial import cKDTree

    xyz = unit_vector(lon, lat)
    # A hair of slack so that float rounding never hides a match; is_match decides exactly.
    radii = np.array([chord_for_distance(r * 1000.0, MOON_RADIUS_M)
                      for r in max_match_distance_km(diam, rule)]) * (1 + 1e-9)
    neighbours = cKDTree(xyz).query_ball_point(xyz, radii)
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        kept.append(i)
        cand = np.asarray(neighbours[i], dtype=np.int64)
        cand = cand[cand > i]
        cand = cand[~suppressed[cand]]
        if len(cand):
            suppressed[cand[is_match(lon[i], lat[i], diam[i], lon[cand], lat[cand], diam[cand], rule)]] = True
    return d.iloc[order[kept]]


def default_halo_px(settings: AtlasSettings) -> int:
    """A tile at the coarsest level, in level-0 pixels (see the module's docstring)."""
    return settings.tile_size_px * max(settings.levels)


def merge_blocks(plan: AtlasPlan, work_dir: str | Path, *, settings: AtlasSettings = AtlasSettings(),
                 scale: ScaleSettings = ScaleSettings(), halo_px: int | None = None,
                 rule: MatchRule = PROJECT_RULE, cached_chunks: int = 64) -> Iterator[pd.DataFrame]:
    """The merged craters of each block of ``scale.merge_block_px`` level-0 pixels, row by row;
    every chunk of the plan must be in ``work_dir``. At most ``cached_chunks`` chunk files are
    held in memory besides the block's own detections."""
    halo = default_halo_px(settings) if halo_px is None else halo_px
    block = scale.merge_block_px
    foot = np.array([c.footprint_level0_px() for c in plan.chunks], dtype=np.int64).reshape(-1, 4)
    cache: OrderedDict[str, pd.DataFrame] = OrderedDict()

    def chunk_frame(chunk_id: str) -> pd.DataFrame:
        if chunk_id in cache:
            cache.move_to_end(chunk_id)
        else:
            cache[chunk_id] = read_chunk(chunk_path(work_dir, chunk_id))
            if len(cache) > cached_chunks:
                cache.popitem(last=False)
        return cache[chunk_id]

    n_cols, n_rows = -(-plan.width_px // block), -(-plan.height_px // block)
    for brow in range(n_rows):
        for bcol in range(n_cols):
            # The last block of a row or column also takes the centres past the grid's edge
            # (a coarse level's grid may end up to level - 1 pixels beyond it).
            c0, r0 = bcol * block, brow * block
            c1 = (bcol + 1) * block if bcol + 1 < n_cols else np.inf
            r1 = (brow + 1) * block if brow + 1 < n_rows else np.inf
            e0, f0, e1, f1 = c0 - halo, r0 - halo, c1 + halo, r1 + halo
            near = (foot[:, 0] < e1) & (foot[:, 2] > e0) & (foot[:, 1] < f1) & (foot[:, 3] > f0)
            frames = [chunk_frame(plan.chunks[i].chunk_id) for i in np.flatnonzero(near)]
            frames = [f for f in frames if len(f)]
            if not frames:
                continue
            det = pd.concat(frames, ignore_index=True)
            cx, cy = 0.5 * (det["x0_px"] + det["x1_px"]), 0.5 * (det["y0_px"] + det["y1_px"])
            det = det[(cx >= e0) & (cx < e1) & (cy >= f0) & (cy < f1)]
            craters = merge_craters(det, rule)
            cx, cy = 0.5 * (craters["x0_px"] + craters["x1_px"]), 0.5 * (craters["y0_px"] + craters["y1_px"])
            yield craters[(cx >= c0) & (cx < c1) & (cy >= r0) & (cy < r1)]


def merge_plan(plan: AtlasPlan, work_dir: str | Path, *, settings: AtlasSettings = AtlasSettings(),
               scale: ScaleSettings = ScaleSettings(), halo_px: int | None = None,
               rule: MatchRule = PROJECT_RULE) -> pd.DataFrame:
    """Every crater of the plan's chunk files (block by block, see :func:`merge_blocks`)."""
    blocks = list(merge_blocks(plan, work_dir, settings=settings, scale=scale, halo_px=halo_px, rule=rule))
    if not blocks:
        return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in DETECTION_COLUMNS.items()})
    return pd.concat(blocks, ignore_index=True)


__all__: Sequence[str] = ["default_halo_px", "merge_blocks", "merge_craters", "merge_plan"]
