"""The atlas at scale: the chunk plan, the batched resumable chunk worker, the crater-aware
block merge, and the in-process and Ray engines giving one atlas."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from detectron2_rfcn.atlas import AtlasSettings
from detectron2_rfcn.atlas_scale import ScaleSettings, plan_atlas
from etl.tiling import tile_starts

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def mosaic_files(tmp_path):
    dom, dem = tmp_path / "dom.tif", tmp_path / "dem.tif"
    dom.write_bytes(b"dom")
    dem.write_bytes(b"dem")
    return dom, dem


def test_plan_cuts_every_level_into_compact_chunks_covering_each_tile_once(mosaic_files):
    settings = AtlasSettings(levels=(1, 2, 4), tile_size_px=128, overlap_px=32, max_diameter_px=32)
    width, height = 2000, 1300
    plan = plan_atlas(*mosaic_files, "model-a", width_px=width, height_px=height, settings=settings,
                      scale=ScaleSettings(chunk_tiles=9))
    stride = 128 - 32
    for level in settings.levels:
        rows = tile_starts(-(-height // level), 128, stride)
        cols = tile_starts(-(-width // level), 128, stride)
        expected = sorted((c, r, w, h) for r, h in rows for c, w in cols)
        got = sorted(w for ch in plan.chunks if ch.level == level for w in ch.windows)
        assert got == expected  # every tile of the level exactly once
    for chunk in plan.chunks:
        assert len(chunk.windows) <= 9
        c0, r0, c1, r1 = chunk.footprint_level0_px()
        # A 3 x 3 block of tiles: compact, not a strip.
        assert c1 - c0 <= (2 * stride + 128) * chunk.level and r1 - r0 <= (2 * stride + 128) * chunk.level
    assert len({c.chunk_id for c in plan.chunks}) == len(plan.chunks)


def test_chunk_ids_are_stable_and_change_with_their_inputs(mosaic_files):
    dom, dem = mosaic_files
    settings = AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=32, max_diameter_px=32)
    kw = dict(width_px=900, height_px=700, settings=settings, scale=ScaleSettings(chunk_tiles=4))

    def ids(**over):
        args = {**kw, **over}
        return [c.chunk_id for c in plan_atlas(dom, dem, args.pop("model", "model-a"), **args).chunks]

    base = ids()
    assert ids() == base
    # Settings that do not change detections keep the ids (a resumed run may change them).
    assert ids(scale=ScaleSettings(chunk_tiles=4, batch_size=16, merge_block_px=512)) == base
    assert ids(settings=AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=32, max_diameter_px=32,
                                      nms_iou=0.3)) == base
    # Adding a level keeps the other levels' chunks.
    with_4 = ids(settings=AtlasSettings(levels=(1, 2, 4), tile_size_px=128, overlap_px=32, max_diameter_px=32))
    assert set(base) < set(with_4)
    # The model, a detection setting, the chunking, or the mosaic's content change every id.
    assert not set(ids(model="model-b")) & set(base)
    assert not set(ids(settings=AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=32, max_diameter_px=32,
                                              score_threshold=0.7))) & set(base)
    assert not set(ids(scale=ScaleSettings(chunk_tiles=9))) & set(base)
    st = dom.stat()
    os.utime(dom, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not set(ids()) & set(base)
