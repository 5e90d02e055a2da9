"""``deepcraters tiles`` on bad input: a clear message and a non-zero exit, nothing written,
never a silent wrong result (a DEM that misses the DOM, broken rasters, non-lunar CRSs)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from affine import Affine

from etl.cli import main
from etl.synthetic import generate_world
from etl.tiling import SPLITS

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--tile-size", "128", "--overlap", "16", "--levels", "1", "--quiet"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_input_world")
    generate_world(out, size_px=384, seed=2, crater_density_per_mpx=600.0)
    return out


def _copy_world(world, dst: Path) -> Path:
    shutil.copytree(world, dst)
    return dst


def _shift_dem(path: Path, dx_m: float) -> None:
    """Move the DEM east by ``dx_m`` (its pixels unchanged)."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    assert profile["crs"].is_projected  # metres, so the shift is one in metres
    t = profile["transform"]
    profile["transform"] = Affine(t.a, t.b, t.c + dx_m, t.d, t.e, t.f)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def _tiles(world, out, *extra) -> int:
    return main(["tiles", "--world", str(world), "--out", str(out), *ARGS, *extra])


def _nothing_written(out: Path) -> None:
    assert not out.exists()
    if out.parent.exists():  # no partial dataset beside it
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_dem_that_misses_the_dom_is_refused(world, tmp_path, capsys):
    w = _copy_world(world, tmp_path / "w")
    _shift_dem(w / "dem.tif", 1_000_000.0)  # 1,000 km east: no overlap at all
    out = tmp_path / "ds"
    assert _tiles(w, out) != 0
    err = capsys.readouterr().err
    assert "does not overlap" in err and "dem.tif" in err and "Traceback" not in err
    _nothing_written(out)


def test_half_covering_dem_leaves_out_tiles_without_elevation(world, tmp_path, capsys):
    w = _copy_world(world, tmp_path / "w")
    with rasterio.open(w / "dom.tif") as dom:
        width_m, dom_bounds = dom.width * dom.transform.a, dom.bounds
    _shift_dem(w / "dem.tif", width_m / 2)  # the DEM covers the DOM's east half
    out, full = tmp_path / "ds", tmp_path / "full"
    assert _tiles(w, out) == 0
    printed = capsys.readouterr().out
    assert "the DEM covers 50.0% of the DOM" in printed
    assert _tiles(world, full) == 0
    meta, full_meta = (json.loads((d / "dataset.json").read_text()) for d in (out, full))
    n_tiles = sum(meta["splits"].values())
    assert 0 < n_tiles < sum(full_meta["splits"].values())
    assert meta["created_by"]["parameters"]["dropped_no_elevation_tiles"] > 0
    assert f"{meta['created_by']['parameters']['dropped_no_elevation_tiles']} tiles without elevation" in printed
    east_half_m = dom_bounds.left + width_m / 2
    for split in SPLITS:
        for im in json.loads((out / f"{split}.json").read_text())["images"]:
            with rasterio.open(out / im["file_name"]) as ds:
                pixels, left_m = ds.read(), ds.bounds.left
            # Every tile kept has the DEM under (most of) it: real relief, not a zero fill.
            assert left_m + ds.width * ds.transform.a / 2 >= east_half_m
            assert np.ptp(pixels[1]) > 0 and pixels[2].max() > 0


@pytest.mark.parametrize("breakage, message", [
    ("missing_dom", "no such raster file"),
    ("earth_crs", "which is an Earth CRS"),
    ("no_crs", "has no CRS; pass assume_crs"),
    ("not_a_raster", "cannot open as a raster"),
    ("truncated", "the file may be truncated or corrupt"),
])
def test_raster_and_crs_errors_are_messages_and_write_nothing(world, tmp_path, capsys, breakage, message):
    w = _copy_world(world, tmp_path / "w")
    dom = w / "dom.tif"
    if breakage == "missing_dom":
        dom.unlink()
    elif breakage == "earth_crs":
        with rasterio.open(dom, "r+") as ds:
            ds.crs = "EPSG:4326"
    elif breakage == "no_crs":
        with rasterio.open(world / "dom.tif") as src:
            profile, data = src.profile, src.read()
        del profile["crs"]
        with rasterio.open(dom, "w", **profile) as dst:
            dst.write(data)
    elif breakage == "not_a_raster":
        dom.write_text("lon,lat\n1,2\n")
    else:
        # A GeoTIFF whose header is intact and whose pixels are cut off: it opens, then reads fail.
        rasterio.shutil.copy(world / "dom.tif", dom, driver="GTiff")
        with open(dom, "r+b") as f:
            f.truncate(os.path.getsize(dom) // 2)
    out = tmp_path / "new" / "ds"
    assert _tiles(w, out) != 0
    err = capsys.readouterr().err
    assert err.startswith("deepcraters tiles: ") and message in err and "Traceback" not in err
    _nothing_written(out)
    assert not (tmp_path / "new").exists()  # nor the folder made to hold it


def test_bad_mosaic_from_the_command_line_has_no_traceback(world, tmp_path):
    w = _copy_world(world, tmp_path / "w")
    with rasterio.open(w / "dem.tif", "r+") as ds:
        ds.crs = "EPSG:4326"
    run = subprocess.run([sys.executable, "-m", "etl", "tiles", "--world", str(w), "--out", str(tmp_path / "ds"),
                          *ARGS], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 1
    assert "dem.tif has CRS" in run.stderr and "Earth CRS" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "ds").exists()


def test_existing_folder_that_is_not_a_dataset_is_left_alone(world, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _tiles(world, out) != 0
    assert "is not a tile dataset" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # A previous tile dataset is replaced, whole.
    ds = tmp_path / "ds"
    assert _tiles(world, ds) == 0 and _tiles(world, ds, "--seed", "3") == 0
    assert json.loads((ds / "dataset.json").read_text())["created_by"]["parameters"]["seed"] == 3
