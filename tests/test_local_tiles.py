"""Real-Moon inputs: DEM channels in metres on the ground, tiles in a projection centred on each
tile (round craters at every latitude), lon/lat split regions and a catalogue's completeness."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from etl.geometry import PixelGrid, boxes_px_to_craters, crater_boxes_px
from etl.local_tiles import (LocalTile, LonLatBox, build_local_dataset, check_disjoint, parse_boxes,
                             plan_local_tiles, tile_footprint_lonlat)
from etl.moon import MOON_CRS, MOON_RADIUS_M, great_circle_distance_m
from lunar_bowls import bowl_dem, write_global
from etl.rasters import (ground_pixel_size_m, hillshade, model_channels, open_raster, read_onto_grid,
                         surface_gradient)

RAD = math.pi / 180.0


@pytest.fixture(scope="module")
def bowls_tif(tmp_path_factory):
    """A crater of 300 km at 60 N, one of 200 km on the antimeridian (rim on both edges)."""
    path = tmp_path_factory.mktemp("bowls") / "dem.tif"
    write_global(path, bowl_dem([(30.0, 60.0, 300.0), (179.8, 0.0, 200.0)]))
    return path


# --------------------------------------------------------------------------- channels


def test_slope_of_a_plane_at_60_degrees_uses_ground_metres():
    # A plane tilted 5 % east and 2 % north, sampled on a lon/lat grid around 60 N: the east-west
    # pixel side there is half the equatorial one, which the slope must use.
    grid = PixelGrid(MOON_CRS, Affine(0.1, 0, 10.0, 0, -0.1, 61.05), 21, 21)  # row 10 centred on 60 N
    lon, lat = grid.pixel_to_lonlat(*np.meshgrid(np.arange(21) + 0.5, np.arange(21) + 0.5))
    east_m = (lon - 11.05) * RAD * MOON_RADIUS_M * np.cos(lat * RAD)
    north_m = (lat - 60.0) * RAD * MOON_RADIUS_M
    dem = 0.05 * east_m + 0.02 * north_m
    sizes_x, size_y = ground_pixel_size_m(grid)
    assert sizes_x[10] == pytest.approx(0.1 * RAD * MOON_RADIUS_M * math.cos(60.0 * RAD), rel=1e-3)
    assert size_y == pytest.approx(0.1 * RAD * MOON_RADIUS_M, rel=1e-9)
    slope = model_channels(None, dem, grid, channels=("slope",))[0] * 90.0
    truth = math.degrees(math.atan(math.hypot(0.05, 0.02)))
    assert slope[10, 10] == pytest.approx(truth, rel=0.01)
    # The equatorial pixel size on both axes (what a scalar size does) halves the east gradient.
    wrong = model_channels(None, dem, grid.pixel_size_m, channels=("slope",))[0] * 90.0
    assert wrong[10, 10] < 0.7 * truth


def test_hillshade_lights_slopes_facing_the_sun():
    flat = hillshade(np.zeros((3, 3)), np.zeros((3, 3)), azimuth_deg=90.0, elevation_deg=30.0)
    assert np.allclose(flat, math.sin(30.0 * RAD))
    # A slope rising to the west faces east: facing a sun in the east (azimuth 90), it is brighter
    # than flat ground; facing a sun in the west, darker.
    dz_east = np.full((3, 3), -0.3)
    assert (hillshade(dz_east, 0 * dz_east, azimuth_deg=90.0, elevation_deg=30.0) > flat + 0.1).all()
    assert (hillshade(dz_east, 0 * dz_east, azimuth_deg=270.0, elevation_deg=30.0) < flat - 0.1).all()
    # The surface normal pointing at the sun: fully lit.
    tilt = math.tan(60.0 * RAD)  # normal tilted 60 degrees east = towards a sun 30 degrees up in the east
    assert hillshade(np.array([[-tilt]]), np.array([[0.0]]), azimuth_deg=90.0, elevation_deg=30.0)[0, 0] == \
        pytest.approx(1.0, abs=1e-6)


def test_dem_only_channels_need_no_dom_and_unknown_channels_are_refused():
    dem = np.add.outer(np.arange(8.0), np.arange(8.0)) * 100.0
    out = model_channels(None, dem, 100.0, channels=("hillshade", "slope", "dem"))
    assert out.shape == (3, 8, 8)
    assert out[2].min() == 0.0 and out[2].max() == pytest.approx(1.0)
    gx, gy = surface_gradient(dem, 100.0)
    assert np.allclose(gx, 1.0) and np.allclose(gy, -1.0)  # rises east; rows run south, so falls north
    with pytest.raises(ValueError, match="channel 'dom'"):
        model_channels(None, dem, 100.0, channels=("dom", "dem"))
    with pytest.raises(ValueError, match="distinct names"):
        model_channels(None, dem, 100.0, channels=("albedo",))


# --------------------------------------------------------------------------- local projection


def test_a_round_crater_at_60_degrees_is_round_in_its_local_tile(bowls_tif):
    with open_raster(bowls_tif) as ds:
        mosaic = read_onto_grid(ds, PixelGrid.from_dataset(ds))
        tile = LocalTile(1, 31.0, 59.0, 64, 15_000.0)
        local = read_onto_grid(ds, tile.grid)

    def extent(z):  # columns and rows of the depression deeper than half the bowl
        rows, cols = np.nonzero(np.ma.filled(z, 0.0) < -500.0)
        return cols.max() - cols.min() + 1, rows.max() - rows.min() + 1

    w, h = extent(mosaic)
    assert w / h > 1.7  # the simple-cylindrical mosaic stretches it 2:1
    w, h = extent(local)
    assert abs(w / h - 1.0) < 0.1
    # r < R / sqrt(2) is deeper than half: 212 km across, ~14 px of 15 km.
    assert 300.0 / math.sqrt(2) / 15.0 - 2 <= w <= 300.0 / math.sqrt(2) / 15.0 + 2
    box = crater_boxes_px(tile.grid, 30.0, 60.0, 300.0)[0]
    assert (box[2] - box[0]) / (box[3] - box[1]) == pytest.approx(1.0, abs=0.01)
    lon, lat, d_km = boxes_px_to_craters(tile.grid, box[None])
    assert (lon[0], lat[0], d_km[0]) == (pytest.approx(30.0, abs=0.01), pytest.approx(60.0, abs=0.01),
                                         pytest.approx(300.0, rel=0.005))


def test_tiles_of_a_box_spanning_all_longitudes_straddle_the_antimeridian():
    tiles = plan_local_tiles(LonLatBox(-180, -30, 180, 30), pixel_size_m=15_000.0, tile_size_px=64,
                             overlap_px=24, levels=(1,))
    straddling = []
    for t in tiles:
        lon, _ = tile_footprint_lonlat(t)
        if (lon > 170).any() and (lon < -170).any():
            straddling.append(t)
    assert straddling
    # Neighbours in a row overlap: the gap between centres is below a tile's width on the ground.
    row = sorted((t for t in tiles if t.lat0 == tiles[0].lat0), key=lambda t: t.lon0)
    gaps = great_circle_distance_m(row[0].lon0, row[0].lat0, row[1].lon0, row[1].lat0)
    assert gaps < 64 * 15_000.0


def test_boxes_parse_contain_and_overlap_across_the_antimeridian():
    a, b = parse_boxes("170,-10,-170,10; -175,0,-160,5")
    assert a.contains([175.0, -179.0, 180.0, -180.0, 0.0], [0, 0, 0, 0, 0]).tolist() == [True, True, True, True, False]
    assert a.overlaps(b) and b.overlaps(a)
    assert not a.overlaps(LonLatBox(-170, -10, -160, 10))  # touching edges share no area
    with pytest.raises(ValueError, match="overlaps"):
        check_disjoint({"train": [a], "test": [b]})
    with pytest.raises(ValueError, match="lon_min,lat_min"):
        LonLatBox.parse("1,2,3")


# --------------------------------------------------------------------------- datasets


def _catalogue() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 300
    return pd.DataFrame({"lon": rng.uniform(-180, 180, n), "lat": rng.uniform(-60, 60, n),
                         "diameter_km": np.where(np.arange(n) % 3 == 0, 30.0, 80.0) * rng.uniform(0.5, 1.5, n)})


def test_split_regions_labelled_region_and_completeness(bowls_tif, tmp_path):
    regions = {"train": parse_boxes("-180,-60,-60,60"), "val": parse_boxes("-50,-60,0,60"),
               "test": parse_boxes("10,-60,120,60")}
    labelled = parse_boxes("-180,-90,90,90")
    summary = build_local_dataset(bowls_tif, _catalogue(), tmp_path / "ds", regions=regions, labelled=labelled,
                                  pixel_size_m=15_000.0, tile_size_px=64, overlap_px=16, levels=(1,),
                                  min_diameter_px=2.0, max_diameter_px=16.0, complete_above_km=40.0, progress=False)
    assert all(summary.tiles[s] > 0 for s in ("train", "val", "test"))
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["channels"] == ["hillshade", "slope", "dem"] and info["crs"] is None
    for split in ("train", "val", "test"):
        coco = json.loads((tmp_path / "ds" / f"{split}.json").read_text())
        for img in coco["images"]:
            t = LocalTile(1, img["lon0"], img["lat0"], 64, img["pixel_size_m"])
            lon, lat = tile_footprint_lonlat(t)
            # Its whole footprint in its split's boxes and in the labelled region: never in another split's.
            assert np.any([b.contains(lon, lat).all() for b in regions[split]])
            assert labelled[0].contains(lon, lat).all()
            for other in set(regions) - {split}:
                assert not np.any([b.contains(lon, lat).any() for b in regions[other]])
            assert img["ignore_below_px"] == pytest.approx(40_000.0 / 15_000.0)
            with rasterio.open(tmp_path / "ds" / img["file_name"]) as ds:
                assert "aeqd" in ds.crs.to_proj4() or "Azimuthal" in ds.crs.to_wkt()
        # Craters under the completeness limit are no labels (they are unlabelled, not background).
        assert all(a["diameter_km"] >= 40.0 for a in coco["annotations"])
    assert summary.annotations["train"] > 0


def test_a_dem_only_dataset_with_overlapping_split_boxes_is_refused(bowls_tif, tmp_path):
    with pytest.raises(ValueError, match="never overlap"):
        build_local_dataset(bowls_tif, _catalogue(), tmp_path / "ds", pixel_size_m=15_000.0, tile_size_px=64,
                            overlap_px=16, regions={"train": parse_boxes("-180,-60,0,60"),
                                                    "test": parse_boxes("-10,-60,60,60")}, progress=False)
    assert not (tmp_path / "ds").exists()


# --------------------------------------------------------------------------- commands


def _options(parser) -> dict:
    return {a.dest: (tuple(a.option_strings), a.default, a.type) for a in parser._actions if a.option_strings}


def test_tiles_and_atlas_take_the_same_grid_options():
    from etl.commands.atlas import build_parser as atlas_parser
    from etl.commands.tiles import build_parser as tiles_parser

    tiles, atlas = _options(tiles_parser()), _options(atlas_parser())
    shared = ["tile_size", "overlap", "levels", "min_diameter_px", "max_diameter_px", "projection", "pixel_size_m",
              "sun_azimuth", "sun_elevation", "assume_crs"]
    for dest in shared:
        assert tiles[dest][:2] == atlas[dest][:2], dest
    # One format for levels in both: comma- or space-separated.
    for parser in (tiles_parser(), atlas_parser()):
        args = ["--out", "x", "--dem", "d", "--config-file", "c", "--weights", "w"]
        ns, _ = parser.parse_known_args(args + ["--levels", "1,2", "4"])
        assert ns.levels == (1, 2, 4)


def test_tiles_command_cuts_a_dem_only_local_dataset(bowls_tif, tmp_path):
    from etl.commands.tiles import main

    cat = tmp_path / "cat.csv"
    _catalogue().to_csv(cat, index=False)
    rc = main(["--dem", str(bowls_tif), "--catalogue", str(cat), "--out", str(tmp_path / "ds"), "--projection", "local",
               "--channels", "hillshade,slope,dem", "--pixel-size-m", "15000", "--tile-size", "64", "--overlap", "16",
               "--levels", "1", "--max-diameter-px", "16", "--train=-180,-60,-60,60", "--test", "0,-60,120,60",
               "--complete-above-km", "30", "--quiet"])
    assert rc == 0
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["channels"] == ["hillshade", "slope", "dem"] and info["splits"]["train"] > 0
    assert info["complete_above_km"] == 30.0 and "dom" not in info["source_mosaics"]
    rc = main(["--dem", str(bowls_tif), "--catalogue", str(cat), "--out", str(tmp_path / "bad"), "--projection",
               "local", "--channels", "hillshade", "--train=-180,-60,0,60", "--test=-10,-60,60,60", "--quiet"])
    assert rc == 1 and not (tmp_path / "bad").exists()


def test_lola_evaluation_says_what_is_missing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_lola.py"
    done = subprocess.run([sys.executable, str(script), "--lola", str(tmp_path / "none"), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "missing" in done.stderr and "dem.tif" in done.stderr and "lunar-rasters" in done.stderr
    assert not (tmp_path / "w").exists()
