"""Atlas on tiles in a projection centred on each tile: a crater on the antimeridian of a global
mosaic is found once, a round crater at 60 degrees comes back with its lon, lat and diameter;
training helpers for real inputs (re-lit hillshade, unlabelled small craters)."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from scipy import ndimage

from detectron2_rfcn.atlas import AtlasSettings
from detectron2_rfcn.atlas_local import GLOBE, detect_local
from detectron2_rfcn.dataset_mapper import relight_hillshade
from detectron2_rfcn.ps_roi_head import PSROIHeads
from etl.geometry import crater_boxes_px
from etl.local_tiles import LonLatBox
from etl.rasters import hillshade, surface_gradient
from lunar_bowls import bowl_dem, write_global

CRATERS = [(30.0, 60.0, 300.0), (179.8, 0.0, 200.0), (-60.0, -20.0, 150.0), (45.0, 88.5, 200.0)]


@pytest.fixture(scope="module")
def global_dem(tmp_path_factory):
    path = tmp_path_factory.mktemp("global") / "dem.tif"
    write_global(path, bowl_dem(CRATERS))
    return path


def replayed_catalogue(channels, grid):
    """A predictor that 'detects' the catalogue's craters: their rim boxes in the tile's grid."""
    lon, lat, d = (np.array(v) for v in zip(*CRATERS))
    boxes = crater_boxes_px(grid, lon, lat, d)
    ok = np.isfinite(boxes).all(axis=1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < grid.width) \
        & (boxes[:, 1] < grid.height)
    return boxes[ok], np.full(int(ok.sum()), 0.9)


def depressions(channels, grid):
    """A predictor that reads pixels: each blob of the elevation channel below the tile's middle
    (deeper than half a paraboloid bowl: r < R / sqrt 2) is a crater of sqrt 2 times its size."""
    dem = channels[-1]
    labels, n = ndimage.label(dem < 0.5)
    boxes = []
    for sl in ndimage.find_objects(labels):
        cy, cx = (sl[0].start + sl[0].stop) / 2.0, (sl[1].start + sl[1].stop) / 2.0
        half = math.sqrt(2.0) * 0.5 * ((sl[0].stop - sl[0].start) + (sl[1].stop - sl[1].start)) / 2.0
        boxes.append([cx - half, cy - half, cx + half, cy + half])
    return np.array(boxes, dtype=float).reshape(-1, 4), np.full(len(boxes), 0.9)


@pytest.mark.slow
def test_a_crater_on_the_antimeridian_is_found_once(global_dem):
    settings = AtlasSettings(levels=(1, 2), tile_size_px=64, overlap_px=24, min_diameter_px=4.0,
                             max_diameter_px=24.0, score_threshold=0.5)
    atlas = detect_local(replayed_catalogue, dem_path=global_dem, pixel_size_m=15_000.0, settings=settings,
                         regions=(LonLatBox(-180, -40, 180, 40),), progress=False)
    on_seam = atlas[(atlas["lon"].abs() > 175.0) & (atlas["lat"].abs() < 5.0)]
    assert len(on_seam) == 1
    assert on_seam["lon"].iloc[0] == pytest.approx(179.8, abs=0.05)
    assert on_seam["diameter_km"].iloc[0] == pytest.approx(200.0, rel=0.01)
    # Seen whole by more than one tile and at both levels before the merge: one crater after it.
    raw = detect_local(replayed_catalogue, dem_path=global_dem, pixel_size_m=15_000.0, settings=settings,
                       regions=(LonLatBox(-180, -40, 180, 40),), merge=False, progress=False)
    raw_seam = raw[(raw["lon"].abs() > 175.0) & (raw["lat"].abs() < 5.0)]
    assert len(raw_seam) > 1 and set(raw_seam["level"]) == {1, 2}
    assert len(atlas) == 2  # the 60 N and polar craters lie outside the band; the -20 S one is in it


@pytest.mark.slow
def test_craters_read_from_pixels_come_back_round_with_lon_lat_and_diameter(global_dem):
    # Over the whole Moon: at 60 N, on the antimeridian, and on the north pole (a tile centred on it).
    settings = AtlasSettings(levels=(1,), tile_size_px=64, overlap_px=32, min_diameter_px=4.0,
                             max_diameter_px=32.0, score_threshold=0.5)
    atlas = detect_local(depressions, dem_path=global_dem, pixel_size_m=15_000.0, settings=settings,
                         regions=(GLOBE,), progress=False)
    assert len(atlas) == len(CRATERS)
    for lon, lat, d_km in CRATERS:
        dist = np.hypot(((atlas["lon"] - lon + 180) % 360) - 180, atlas["lat"] - lat)
        found = atlas.iloc[int(np.argmin(dist))]
        # One 15 km pixel of the mosaic is the measuring stick.
        assert found["lat"] == pytest.approx(lat, abs=0.6)
        assert ((found["lon"] - lon + 180) % 360 - 180) * math.cos(math.radians(lat)) == pytest.approx(0.0, abs=0.6)
        assert found["diameter_km"] == pytest.approx(d_km, rel=0.12)


def test_relit_hillshade_follows_the_sun_and_the_dem():
    yy, xx = np.mgrid[-16:16, -16:16] + 0.5
    bowl_m = np.clip(xx ** 2 + yy ** 2, 0, 144) * 10.0  # a bowl 1,440 m deep
    dem = (bowl_m - bowl_m.min()) / (bowl_m.max() - bowl_m.min())
    image = np.stack([np.zeros_like(dem), np.zeros_like(dem), dem]).astype(np.float32)
    record = {"dem_relief_m": float(bowl_m.max() - bowl_m.min()), "pixel_size_m": 500.0, "sun_elevation_deg": 30.0}
    channels = ["hillshade", "slope", "dem"]
    east = relight_hillshade(image, channels, record, 90.0)[0]
    west = relight_hillshade(image, channels, record, 270.0)[0]
    assert np.allclose(east, hillshade(*surface_gradient(bowl_m, 500.0), azimuth_deg=90.0, elevation_deg=30.0),
                       atol=1e-5)
    # The sun in the east lights the bowl's western inner wall: the mirror image of a western sun.
    assert np.allclose(east, west[:, ::-1], atol=1e-5)
    assert east[16, 8] > east[16, 24]
    assert np.array_equal(relight_hillshade(image, channels, {}, 90.0), image)  # no record: unchanged


def test_small_unmatched_rois_are_not_taught_as_background():
    p = Instances((64, 64))
    p.proposal_boxes = Boxes(torch.tensor([[0, 0, 5, 5], [0, 0, 30, 30], [10, 10, 15, 15], [0, 0, 6, 6]],
                                          dtype=torch.float32))
    p.gt_classes = torch.tensor([1, 1, 0, 1])  # background, background, crater, background (1 class)
    head = SimpleNamespace(num_classes=1)
    (kept,) = PSROIHeads.drop_unlabelled_small(head, [p], [10.0])
    # The small background RoIs go; the large background and the small matched crater stay.
    assert kept.proposal_boxes.tensor[:, 2].tolist() == [30.0, 15.0]
    (same,) = PSROIHeads.drop_unlabelled_small(head, [p], [0.0])
    assert len(same) == 4
