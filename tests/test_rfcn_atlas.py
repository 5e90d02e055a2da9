"""Atlas inference over a whole mosaic: tiling, edge handling, cross-tile NMS, projection
back to lon/lat/diameter, and the written atlas file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from detectron2_rfcn.atlas import AtlasSettings, detect_mosaic, write_mosaic_atlas
from etl.geometry import PixelGrid, crater_boxes_px
from etl.moon import great_circle_distance_m
from etl.synthetic import generate_world
from etl.tiling import tile_windows

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return generate_world(out, size_px=384, pixel_size_m=200.0, center_lon_deg=179.0, center_lat_deg=40.0,
                          seed=3, min_diameter_px=8.0, max_diameter_px=60.0)


@pytest.mark.parametrize("width,height,tile,overlap", [(384, 384, 128, 32), (1000, 300, 256, 64), (100, 90, 128, 32)])
def test_tile_windows_cover_the_grid_with_the_overlap(width, height, tile, overlap):
    windows = list(tile_windows(width, height, tile, overlap))
    covered = np.zeros((height, width), dtype=int)
    for col, row, w, h in windows:
        assert 0 <= col and 0 <= row and col + w <= width and row + h <= height
        covered[row:row + h, col:col + w] += 1
    assert covered.min() >= 1
    # Any square of side <= overlap lies wholly inside some tile.
    rng = np.random.default_rng(0)
    for _ in range(200):
        size = int(rng.integers(1, min(overlap, width, height) + 1))
        x, y = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        assert any(c <= x and r <= y and x + size <= c + w and y + size <= r + h for c, r, w, h in windows)


def test_settings_refuse_craters_larger_than_the_overlap():
    with pytest.raises(ValueError, match="overlap_px"):
        AtlasSettings(tile_size_px=256, overlap_px=32, max_diameter_px=64)


class CatalogueOracle:
    """A *perfect detector* for testing the sweep alone (it stands in for no shipped
    component): it returns the catalogue's projected boxes as seen inside each tile, cut
    by the tile's edges as a real detector would see them."""

    def __init__(self, catalogue: pd.DataFrame):
        self.catalogue = catalogue

    def __call__(self, channels, tile_grid):
        c = self.catalogue
        b = crater_boxes_px(tile_grid, c["lon"], c["lat"], c["diameter_km"])
        w, h = tile_grid.width, tile_grid.height
        inside = (b[:, 2] > 0) & (b[:, 3] > 0) & (b[:, 0] < w) & (b[:, 1] < h)
        b = np.clip(b[inside], 0, [w, h, w, h])
        return b, np.full(len(b), 0.9)


def test_sweep_recovers_every_crater_once_with_its_size_and_place(world):
    import rasterio

    catalogue = pd.read_csv(world.catalogue_path)
    with rasterio.open(world.dom_path) as ds:
        grid0 = PixelGrid.from_dataset(ds)
    settings = AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=64, min_diameter_px=8,
                             max_diameter_px=64, score_threshold=0.5, nms_iou=0.5)
    atlas = detect_mosaic(CatalogueOracle(catalogue), world.dom_path, world.dem_path, settings=settings,
                          progress=False)

    boxes0 = crater_boxes_px(grid0, catalogue["lon"], catalogue["lat"], catalogue["diameter_km"])
    size_px = np.sqrt((boxes0[:, 2] - boxes0[:, 0]) * (boxes0[:, 3] - boxes0[:, 1]))
    m = settings.edge_margin_px  # craters cut by (or touching) the mosaic's edge cannot be measured
    inside = (boxes0[:, 0] >= m) & (boxes0[:, 1] >= m) & (boxes0[:, 2] <= grid0.width - m) & (boxes0[:, 3] <= grid0.height - m)
    expected = catalogue[inside & (size_px >= 8) & (size_px <= 64 * 2)]
    assert len(expected) > 20
    # Each expected crater is found exactly once, at its place and size.
    d_m = great_circle_distance_m(expected["lon"].to_numpy()[:, None], expected["lat"].to_numpy()[:, None],
                                  atlas["lon"].to_numpy()[None, :], atlas["lat"].to_numpy()[None, :])
    nearest = d_m.argmin(axis=1)
    centre_err_frac = d_m[np.arange(len(expected)), nearest] / (expected["diameter_km"].to_numpy() * 1000)
    assert np.all(centre_err_frac < 0.02)
    assert np.allclose(atlas["diameter_km"].to_numpy()[nearest], expected["diameter_km"], rtol=0.02)
    assert len(set(nearest)) == len(expected)
    # No extra detections: partial views at inner tile edges were dropped, duplicates merged.
    assert len(atlas) == len(expected)
    # The study area straddles the antimeridian: longitudes come back normalised.
    assert atlas["lon"].between(-180, 180).all() and (atlas["lon"] < 0).any() and (atlas["lon"] > 0).any()


def test_real_rfcn_sweeps_a_mosaic_and_writes_a_valid_atlas(world, tmp_path):
    from detectron2_rfcn.config import get_rfcn_cfg
    from etl.contracts import read_atlas
    from etl.provenance import config_hash

    cfg = get_rfcn_cfg(str(REPO_ROOT / "configs/quick_schedules/rfcn_R_18_C4_instant_test.yaml"),
                       ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    settings = AtlasSettings(levels=(2,), tile_size_px=192, overlap_px=64, max_diameter_px=64, score_threshold=0.0)
    out = tmp_path / "atlas.gpkg"
    written = write_mosaic_atlas(cfg, None, world.dom_path, world.dem_path, out, run_name="untrained-test",
                                 settings=settings, progress=False)
    atlas, provenance = read_atlas(out)
    assert len(atlas) == len(written)
    assert provenance.run_name == "untrained-test"
    assert provenance.model == "RFCN/build_resnet_backbone/R18"  # no weights: no "@file" suffix
    assert provenance.config_hash == config_hash(cfg) and len(provenance.config_hash) == 16
    assert provenance.source_mosaics == (str(world.dom_path), str(world.dem_path))
    if len(atlas):  # an untrained model may or may not fire; whatever it finds is inside the mosaic
        assert (atlas["x0_px"] >= -1).all() and (atlas["x1_px"] <= 384 + 1).all()
        assert (atlas["level"] == 2).all()
