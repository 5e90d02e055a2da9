"""Rasters through rasterio: CRS checks, lazy windows, nodata, broken files, DEM
resampling onto the DOM grid, and the multi-channel model input."""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pyproj
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin
from rasterio.windows import Window

from etl.geometry import LunarCRSError, PixelGrid
from etl.rasters import CHANNELS, RasterError, model_channels, open_raster, read_aligned, read_window

EQC = "IAU_2015:30110"


def _write(path, data, *, crs=EQC, transform=None, nodata=None, **options):
    data = np.asarray(data)
    profile = dict(driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=data.dtype,
                   crs=crs, transform=transform or from_origin(0.0, 0.0, 100.0, 100.0), nodata=nodata)
    profile.update(options)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
    return path


# ------------------------------------------------------------------------ opening

def test_earth_crs_and_missing_crs_refused_unless_assumed(tmp_path):
    earth = _write(tmp_path / "earth_dom.tif", np.ones((8, 8), np.uint8), crs="EPSG:4326",
                   transform=from_origin(0, 8, 1, 1))
    bare = _write(tmp_path / "bare_dom.tif", np.ones((8, 8), np.uint8), crs=None)
    with pytest.raises(LunarCRSError, match=r"earth_dom\.tif.*EPSG:4326.*assume_crs"):
        open_raster(earth)
    with pytest.raises(LunarCRSError, match=r"bare_dom\.tif has no CRS; pass assume_crs"):
        open_raster(bare)
    for path, assumed in ((earth, "IAU_2015:30100"), (bare, "IAU_2015:30110")):
        with open_raster(path, assume_crs=assumed) as ds:
            assert pyproj.CRS(ds.crs.to_wkt()).equals(pyproj.CRS(assumed), ignore_axis_order=True)
            assert PixelGrid.from_dataset(ds).crs == ds.crs
            assert read_window(ds, (0, 0, 8, 8)).sum() == 64  # data still readable through the VRT


def test_missing_corrupt_and_truncated_files_name_the_file(tmp_path):
    with pytest.raises(RasterError, match=r"nowhere\.tif: no such raster file"):
        open_raster(tmp_path / "nowhere.tif")
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"this is not a GeoTIFF\n" * 10)
    with pytest.raises(RasterError, match=r"junk\.tif"):
        open_raster(junk)
    good = _write(tmp_path / "full.tif", np.random.default_rng(0).random((512, 512), dtype=np.float32),
                  tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    data = good.read_bytes()
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(RasterError, match=r"truncated\.tif"):
        with open_raster(truncated) as ds:  # the header survives; the later blocks do not
            read_window(ds, (0, 0, 512, 512))


# ---------------------------------------------------------------------- windows

def test_read_window_masks_nodata_and_outside(tmp_path):
    data = np.arange(100, dtype=np.int16).reshape(10, 10)
    data[2, 3] = -9999
    with open_raster(_write(tmp_path / "dem.tif", data, nodata=-9999)) as ds:
        win = read_window(ds, Window(-2, -1, 6, 5))
    assert win.dtype == np.float32 and win.shape == (5, 6)
    assert win.mask[0].all() and win.mask[:, :2].all()  # outside the raster
    assert win.mask[3, 5]  # the nodata pixel (row 2, col 3)
    assert win[1, 2] == data[0, 0] and win[4, 5] == data[3, 3]
    assert int(win.mask.sum()) == 6 + 4 * 2 + 1


def test_read_window_resamples_to_out_shape(tmp_path):
    data = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    with open_raster(_write(tmp_path / "dom.tif", data)) as ds:
        small = read_window(ds, (16, 8, 32, 32), out_shape=(8, 8), resampling=Resampling.average)
    expected = data[8:40, 16:48].reshape(8, 4, 8, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(small, expected, rtol=1e-5)


def test_windows_of_a_huge_mosaic_are_read_lazily(tmp_path):
    # 100,000 x 100,000 uint8 = 10 GB as an array; sparse tiles keep the file tiny.
    path = tmp_path / "global_dom.tif"
    size = 100_000
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8", crs=EQC,
                       transform=from_origin(-5e6, 5e6, 100.0, 100.0), nodata=0, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate", sparse_ok=True, bigtiff="yes") as ds:
        for k, (col, row) in enumerate([(0, 0), (50_000, 50_000), (99_000, 99_000)]):
            ds.write(np.full((1000, 1000), k + 1, np.uint8), 1, window=Window(col, row, 1000, 1000))
    assert path.stat().st_size < 5_000_000
    # A fresh interpreter, so its peak RSS is this read alone. VmHWM (not getrusage's
    # ru_maxrss, which Linux carries over from the forked parent across exec) is the
    # high-water mark of this process's own memory.
    script = textwrap.dedent(f"""
        import re
        from etl.rasters import open_raster, read_window
        with open_raster({str(path)!r}) as ds:
            a = read_window(ds, (49_900, 49_900, 512, 512))
            b = read_window(ds, (99_500, 99_500, 1024, 1024))
        print(float(a[200, 200]), bool(a.mask[0, 0]), float(b[0, 0]), bool(b.mask[-1, -1]), a.shape, b.shape)
        status = open("/proc/self/status").read()
        print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "2.0 True 3.0 True (512, 512) (1024, 1024)"
    peak_mb = int(out[1])
    assert peak_mb < 400, f"peak RSS {peak_mb} MB: the mosaic was not read lazily"


# -------------------------------------------------------------------- alignment

def test_dem_at_another_resolution_is_resampled_onto_the_dom_grid(tmp_path):
    # DOM 100 m pixels; DEM 300 m pixels over a larger area, a plane z = 2 x - 0.5 y (metres),
    # which bilinear resampling reproduces exactly at the DOM's pixel centres.
    dom_t = from_origin(30_000.0, 60_000.0, 100.0, 100.0)
    dem_t = from_origin(0.0, 90_000.0, 300.0, 300.0)
    cols, rows = np.meshgrid(np.arange(300) + 0.5, np.arange(300) + 0.5)
    dem = (2.0 * (dem_t.c + cols * 300.0) - 0.5 * (dem_t.f - rows * 300.0)).astype(np.float32)
    dom_path = _write(tmp_path / "dom.tif", np.full((200, 300), 7, np.uint8), transform=dom_t)
    dem_path = _write(tmp_path / "dem.tif", dem, transform=dem_t)
    with open_raster(dom_path) as dom_ds, open_raster(dem_path) as dem_ds:
        grid = PixelGrid.from_dataset(dom_ds).window(10, 20, 128, 96)
        dom, dem_on_dom = read_aligned(dom_ds, dem_ds, grid)
        level = grid.downsampled(2)
        dom2, dem2 = read_aligned(dom_ds, dem_ds, level)
    assert dom.shape == dem_on_dom.shape == (96, 128) and not dem_on_dom.mask.any()
    assert np.all(dom == 7)
    for g, arr in ((grid, dem_on_dom), (level, dem2)):
        c, r = np.meshgrid(np.arange(g.width) + 0.5, np.arange(g.height) + 0.5)
        x, y = g.pixel_to_xy(c, r)
        np.testing.assert_allclose(arr, 2.0 * x - 0.5 * y, rtol=1e-5)
    assert dom2.shape == (48, 64)


def test_dem_in_another_crs_is_warped_onto_the_dom_grid(tmp_path):
    # DEM in geographic degrees with z = 1000 * lon; DOM in simple cylindrical metres.
    dem_t = from_origin(-1.0, 1.0, 0.01, 0.01)
    lon = dem_t.c + (np.arange(200) + 0.5) * 0.01
    dem = np.tile(1000.0 * lon, (200, 1)).astype(np.float32)
    dem_path = _write(tmp_path / "dem_geo.tif", dem, crs="IAU_2015:30100", transform=dem_t, nodata=-1e30)
    dom_t = from_origin(-20_000.0, 20_000.0, 200.0, 200.0)
    dom_path = _write(tmp_path / "dom.tif", np.ones((200, 200), np.uint8), transform=dom_t)
    with open_raster(dom_path) as dom_ds, open_raster(dem_path) as dem_ds:
        grid = PixelGrid.from_dataset(dom_ds)
        _, dem_on_dom = read_aligned(dom_ds, dem_ds, grid)
    c, r = np.meshgrid(np.arange(200) + 0.5, np.arange(200) + 0.5)
    lon_px, _ = grid.pixel_to_lonlat(c, r)
    assert not dem_on_dom.mask[5:-5, 5:-5].any()
    np.testing.assert_allclose(dem_on_dom[5:-5, 5:-5], 1000.0 * lon_px[5:-5, 5:-5], atol=0.05)


# ---------------------------------------------------------------- model channels

def test_model_channels_scaling_slope_and_masks():
    pixel_size_m = 50.0
    h, w = 40, 60
    # DEM: a plane rising 30 degrees eastwards.
    dem = np.tile(np.arange(w) * pixel_size_m * math.tan(math.radians(30.0)), (h, 1)).astype(np.float32)
    dom = np.random.default_rng(2).uniform(20, 200, (h, w)).astype(np.float32)
    dom_m = np.ma.masked_array(dom, mask=np.zeros((h, w), bool))
    dem_m = np.ma.masked_array(dem, mask=np.zeros((h, w), bool))
    dom_m[0, 0] = np.ma.masked
    dem_m[10:12, 0:3] = np.ma.masked
    x = model_channels(dom_m, dem_m, pixel_size_m)
    assert x.shape == (len(CHANNELS), h, w) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    np.testing.assert_allclose(x[2, 20:, 5:-5], 30.0 / 90.0, rtol=1e-5)
    assert np.all(x[2, 10:12, 0:3] == 0.0)  # masked: neutral zero slope
    valid = dem_m.compressed()
    np.testing.assert_allclose(x[1, 30], (dem[30] - valid.min()) / (valid.max() - valid.min()), rtol=1e-5)
    lo, hi = np.percentile(dom_m.compressed(), [1, 99])
    np.testing.assert_allclose(x[0, 5, 5:], np.clip((dom[5, 5:] - lo) / (hi - lo), 0, 1), rtol=1e-5)
    assert x[0, 0, 0] == pytest.approx((np.median(dom_m.compressed()) - lo) / (hi - lo), rel=1e-5)
    assert np.array_equal(x, model_channels(dom_m, dem_m, pixel_size_m))
    # Slope is computed in metres: a DEM in km with dem_unit_m=1000 gives the same slope.
    x_km = model_channels(dom_m, dem_m / 1000.0, pixel_size_m, dem_unit_m=1000.0)
    np.testing.assert_allclose(x_km[2], x[2], atol=1e-5)
    # A fixed range (the dtype's) keeps absolute albedo.
    fixed = model_channels(dom_m, dem_m, pixel_size_m, dom_range=(0.0, 255.0))
    np.testing.assert_allclose(fixed[0, 5, 5:], dom[5, 5:] / 255.0, rtol=1e-5)
    empty = np.ma.masked_array(np.zeros((4, 4)), mask=True)
    assert not np.any(model_channels(empty, empty, 10.0))  # fully masked tile: zeros


def test_model_channels_from_a_real_tile(tmp_path):
    # End to end: a uint8 DOM and a float DEM with nodata, through read_aligned.
    rng = np.random.default_rng(3)
    dem = rng.normal(0, 50, (64, 64)).astype(np.float32)
    dem[:4] = -32768
    dom_path = _write(tmp_path / "dom.tif", rng.integers(1, 255, (64, 64), dtype=np.uint8))
    dem_path = _write(tmp_path / "dem.tif", dem, nodata=-32768)
    with open_raster(dom_path) as dom_ds, open_raster(dem_path) as dem_ds:
        grid = PixelGrid.from_dataset(dom_ds)
        dom, dem_read = read_aligned(dom_ds, dem_ds, grid)
    assert dem_read.mask[:4].all() and not dem_read.mask[4:].any()
    x = model_channels(dom, dem_read, grid.pixel_size_m)
    assert np.isfinite(x).all() and 0.0 <= x.min() and x.max() <= 1.0
    assert x[1, 4:].min() == 0.0 and x[1, 4:].max() == 1.0  # per-tile min-max over valid pixels
    assert grid.pixel_size_m == 100.0
