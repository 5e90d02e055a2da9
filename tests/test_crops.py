"""Crater crops: round at any latitude, DEM in metres, nodata and edges reported, lazy reads."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from affine import Affine

from etl.crops import CropSettings, extract_crops, local_lonlat
from etl.geometry import PixelGrid, simple_cylindrical_crs
from etl.moon import MOON_CRS, MOON_RADIUS_M, great_circle_distance_m
from etl.synthetic import crater_profile_m, crater_shape_km

BASE_M = -2500.0   # absolute elevation of the plain: the crop must keep it
NODATA = -32768.0


def _write(path, grid: PixelGrid, values: np.ndarray, *, nodata=NODATA, unit: str = "metre"):
    profile = dict(driver="GTiff", width=grid.width, height=grid.height, count=1, dtype="float32",
                   crs=grid.crs, transform=grid.transform, nodata=nodata, tiled=True, blockxsize=256,
                   blockysize=256)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(values.astype(np.float32), 1)
        ds.set_band_unit(1, unit)
    return path


def _crater_dem(grid: PixelGrid, craters: list[tuple[float, float, float]]) -> np.ndarray:
    """A plain at BASE_M with fresh craters (lon, lat, diameter_km) stamped by great-circle
    distance: the truth, independent of any projection."""
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    lon, lat = grid.pixel_to_lonlat(cols, rows)
    dem = np.full(grid.shape, BASE_M, dtype=np.float32)
    for lon_c, lat_c, d_km in craters:
        shape = crater_shape_km(d_km)
        x = great_circle_distance_m(lon, lat, lon_c, lat_c) / (d_km * 500.0)
        dem += crater_profile_m(x, float(shape["depth_km"]) * 1000.0, float(shape["rim_height_km"]) * 1000.0)
    return dem


def _simple_cylindrical_grid(lon_c: float, lat_c: float, width: int, height: int, pixel_m: float) -> PixelGrid:
    crs = simple_cylindrical_crs(0.0)
    probe = PixelGrid(crs, Affine.identity(), 1, 1)
    xc, yc = probe.lonlat_to_xy(lon_c, lat_c)
    transform = Affine(pixel_m, 0.0, float(xc) - width * pixel_m / 2, 0.0, -pixel_m, float(yc) + height * pixel_m / 2)
    return PixelGrid(crs, transform, width, height)


def _rim_radius_by_azimuth(crop: np.ndarray, n_azimuths: int = 72) -> np.ndarray:
    """Radius (crop px) of the highest point along rays from the centre, sub-pixel (parabola)."""
    s = crop.shape[0]
    radii = np.arange(0.0, s / 2.0 - 1.0, 0.05)
    out = []
    from scipy import ndimage

    for az in np.linspace(0, 2 * np.pi, n_azimuths, endpoint=False):
        cols = s / 2.0 - 0.5 + radii * np.sin(az)
        rows = s / 2.0 - 0.5 - radii * np.cos(az)
        profile = ndimage.map_coordinates(crop, [rows, cols], order=3)
        out.append(radii[int(np.argmax(profile))])
    return np.array(out)


def test_local_lonlat_matches_pyproj_azimuthal_equidistant():
    lon0, lat0 = 150.0, 60.0
    x = np.array([0.0, 10_000.0, -250_000.0, 40_000.0])
    y = np.array([0.0, -5_000.0, 120_000.0, 300_000.0])
    aeqd = pyproj.Transformer.from_crs(
        pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +R={MOON_RADIUS_M} +units=m +no_defs"),
        pyproj.CRS(MOON_CRS), always_xy=True)
    want_lon, want_lat = aeqd.transform(x, y)
    lon, lat = local_lonlat(lon0, lat0, x, y)
    np.testing.assert_allclose(lon, want_lon, atol=1e-9)
    np.testing.assert_allclose(lat, want_lat, atol=1e-9)


def test_crater_at_60_degrees_is_round_and_dem_stays_in_metres(tmp_path):
    lon_c, lat_c, d_km = 10.0, 60.0, 12.0
    grid = _simple_cylindrical_grid(lon_c, lat_c, 900, 500, 150.0)
    dem_path = _write(tmp_path / "dem.tif", grid, _crater_dem(grid, [(lon_c, lat_c, d_km)]))
    # In the mosaic the rim is twice as wide as tall (cos 60 = 0.5): a pixel window is not round.
    from etl.geometry import crater_boxes_px

    x0, y0, x1, y1 = crater_boxes_px(grid, [lon_c], [lat_c], [d_km])[0]
    assert (x1 - x0) / (y1 - y0) == pytest.approx(2.0, rel=0.02)

    settings = CropSettings(size_px=64, side_diameters=3.0)
    crops = extract_crops(pd.DataFrame({"lon": [lon_c], "lat": [lat_c], "diameter_km": [d_km]}),
                          dem_path=dem_path, settings=settings)
    assert crops.dom is None and crops.valid.tolist() == [True] and crops.reasons == [""]
    assert crops.pixel_size_m[0] == pytest.approx(3.0 * d_km * 1000.0 / 64)
    crop = crops.dem_m[0]
    assert crop.dtype == np.float32 and np.isfinite(crop).all()
    radius = _rim_radius_by_azimuth(crop)
    # Round: the rim's radius varies < 5 % by azimuth, and sits at S / (2 k) = 10.67 px.
    assert (radius.max() - radius.min()) / radius.mean() < 0.05
    assert radius.mean() == pytest.approx(settings.radius_px, rel=0.05)
    # Metres, absolute: the plain keeps its -2,500 m and the floor lies depth - rim below it.
    shape = crater_shape_km(d_km)
    depth_m, rim_m = float(shape["depth_km"]) * 1000, float(shape["rim_height_km"]) * 1000
    # The whole crop is the fresh profile at each pixel's distance in radii (crop pixels are 3.5
    # source pixels, so bilinear resampling blurs the rim crest a little: the median error is
    # under 1 % of the depth, the worst under 8 %).
    want = BASE_M + crater_profile_m(settings.radius_grid(), depth_m, rim_m)
    error = np.abs(crop - want)
    assert np.median(error) < 0.01 * depth_m and error.max() < 0.08 * depth_m
    assert crop[0, 0] == pytest.approx(BASE_M, abs=0.5)  # 4.2 radii out: the undisturbed plain
    centre = crop[31:33, 31:33].mean()
    assert centre == pytest.approx(BASE_M + rim_m - depth_m, abs=0.03 * depth_m)


def test_dem_in_kilometres_comes_back_in_metres(tmp_path):
    grid = _simple_cylindrical_grid(0.0, 0.0, 300, 300, 200.0)
    dem_m = _crater_dem(grid, [(0.0, 0.0, 10.0)])
    path = _write(tmp_path / "dem_km.tif", grid, dem_m / 1000.0, unit="km")
    table = pd.DataFrame({"lon": [0.0], "lat": [0.0], "diameter_km": [10.0]})
    from_km = extract_crops(table, dem_path=path).dem_m[0]
    from_m = extract_crops(table, dem_path=_write(tmp_path / "dem_m.tif", grid, dem_m)).dem_m[0]
    np.testing.assert_allclose(from_km, from_m, atol=0.01)
    assert np.nanmean(from_km) < -2000.0


def test_edge_and_nodata_craters_are_not_measurable(tmp_path):
    grid = _simple_cylindrical_grid(0.0, 0.0, 400, 400, 100.0)
    dem = _crater_dem(grid, [])
    dom = np.full(grid.shape, 120.0, dtype=np.float32)
    col_nd, row_nd = grid.lonlat_to_pixel(0.45, 0.45)
    dem[int(row_nd) - 40:int(row_nd) + 40, int(col_nd) - 40:int(col_nd) + 40] = NODATA  # a hole
    dem[10, 10] = NODATA  # one dead pixel
    dem_path = _write(tmp_path / "dem.tif", grid, dem)
    dom_path = _write(tmp_path / "dom.tif", grid, dom, nodata=0, unit="")
    lon_edge, lat_edge = grid.pixel_to_lonlat(395, 200)   # 5 px from the eastern edge
    lon_out, _ = grid.pixel_to_lonlat(1400, 200)         # far outside
    lon_dead, lat_dead = grid.pixel_to_lonlat(12, 12)
    table = pd.DataFrame({
        "lon": [0.0, float(lon_edge), 0.45, float(lon_out), float(lon_dead) + 0.005, 0.0],
        "lat": [0.0, float(lat_edge), 0.45, 0.0, float(lat_dead) - 0.005, 0.0],
        "diameter_km": [4.0, 4.0, 4.0, 4.0, 0.5, np.nan],
    })
    crops = extract_crops(table, dom_path=dom_path, dem_path=dem_path, settings=CropSettings(size_px=32), progress=True)
    assert crops.valid.tolist() == [True, False, False, False, True, False]
    assert crops.reasons[0] == ""
    assert "DEM" in crops.reasons[1] and "DOM" in crops.reasons[1] and "nodata or outside" in crops.reasons[1]
    assert "DEM" in crops.reasons[2] and "DOM" not in crops.reasons[2]
    assert crops.reasons[3] == "outside the DOM; outside the DEM"
    assert crops.reasons[5] == "bad position or diameter"
    # Missing pixels are NaN, never zeros, and present ones keep their values.
    assert np.isnan(crops.dem_m[1]).any() and not (crops.dem_m[1] == 0).any()
    assert np.isnan(crops.dem_m[3]).all()
    np.testing.assert_allclose(crops.dom[2], 120.0)
    # A dead pixel under a small crater's crop: a few NaN, still measurable.
    assert 0 < np.isnan(crops.dem_m[4]).sum() <= 0.05 * crops.dem_m[4].size
    np.testing.assert_allclose(crops.dem_m[0], BASE_M, atol=1e-3)


def test_reads_are_lazy_windows(tmp_path, monkeypatch):
    grid = _simple_cylindrical_grid(0.0, 0.0, 2048, 2048, 100.0)
    dem_path = _write(tmp_path / "dem.tif", grid, _crater_dem(grid, [(0.0, 0.0, 5.0)]))
    reads = []
    original = rasterio.io.DatasetReader.read

    def spy(self, *args, **kwargs):
        reads.append((kwargs.get("window"), kwargs.get("out_shape")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", spy)
    table = pd.DataFrame({"lon": [0.0, 1.0, 0.3], "lat": [0.0, 1.0, -0.2], "diameter_km": [5.0, 3.0, 60.0]})
    crops = extract_crops(table, dem_path=dem_path, settings=CropSettings(size_px=32))
    assert crops.valid.all()
    assert len(reads) == 3 and all(window is not None for window, _ in reads)
    # Each read covers the crop's footprint (side 3 D = 30 px per km at 100 m/px) plus a
    # margin of one decimation step (side / 32) and a pixel each side, never the 2048 x 2048 mosaic.
    for (window, _), d_km in zip(reads, table["diameter_km"]):
        side_px = 3 * d_km * 10.0
        most = side_px * (1 + 2 / 32) + 4
        assert side_px <= window.width <= most and side_px <= window.height <= most
    # The 60 km crater's 1,800 px footprint is decimated by GDAL to about the crop's 32 px.
    assert max(reads[2][1]) <= 2 * 32
    assert np.isfinite(crops.dem_m[2]).all()


def test_global_mosaic_wraps_at_the_antimeridian(tmp_path):
    # A global geographic mosaic at 0.1 deg/px, a crater straddling +-180.
    crs = rasterio.crs.CRS.from_user_input(MOON_CRS)
    grid = PixelGrid(crs, Affine(0.1, 0.0, -180.0, 0.0, -0.1, 90.0), 3600, 1800)
    band = grid.window(0, 600, 3600, 600)  # rows of latitude 30..-30, enough for the crater
    dem = _crater_dem(band, [(179.8, 10.0, 60.0)])
    full = np.full(grid.shape, BASE_M, dtype=np.float32)
    full[600:1200] = dem
    path = _write(tmp_path / "global.tif", grid, full)
    crops = extract_crops(pd.DataFrame({"lon": [179.8, -179.9], "lat": [10.0, 10.0], "diameter_km": [60.0, 60.0]}),
                          dem_path=path, settings=CropSettings(size_px=48))
    assert crops.valid.all(), crops.reasons
    radius = _rim_radius_by_azimuth(crops.dem_m[0])
    assert (radius.max() - radius.min()) / radius.mean() < 0.05
    # The second crop is centred 0.3 deg east, across the seam, and still sees the crater's rim.
    assert np.nanmax(crops.dem_m[1]) > BASE_M + 0.5 * float(crater_shape_km(60.0)["rim_height_km"]) * 1000


def test_crater_near_the_pole_in_polar_stereographic_is_round(tmp_path):
    from etl.geometry import polar_stereographic_crs

    crs = polar_stereographic_crs(north=False)
    lon_c, lat_c, d_km = 135.0, -86.0, 20.0
    probe = PixelGrid(crs, Affine.identity(), 1, 1)
    xc, yc = probe.lonlat_to_xy(lon_c, lat_c)
    grid = PixelGrid(crs, Affine(250.0, 0.0, float(xc) - 60_000.0, 0.0, -250.0, float(yc) + 60_000.0), 480, 480)
    # A small crater 0.6 degrees due north (18.2 km) of the big one, to check "north up".
    dem = _crater_dem(grid, [(lon_c, lat_c, d_km), (lon_c, lat_c + 0.6, 4.0)])
    dem_path = _write(tmp_path / "polar.tif", grid, dem)
    crops = extract_crops(pd.DataFrame({"lon": [lon_c], "lat": [lat_c], "diameter_km": [d_km]}), dem_path=dem_path)
    assert crops.valid.all()
    crop = crops.dem_m[0]
    radius = _rim_radius_by_azimuth(crop)
    assert (radius.max() - radius.min()) / radius.mean() < 0.1  # the small crater's ejecta bumps one azimuth
    assert np.median(radius) == pytest.approx(CropSettings().radius_px, rel=0.05)
    # The small crater's floor sits straight above the centre, 18.2 km / (60 km / 64 px) = 19.4 px up.
    top = crop[:21]
    row, col = np.unravel_index(np.argmin(top), top.shape)
    assert abs(col + 0.5 - 32.0) <= 1.0 and abs(row + 0.5 - (32.0 - 19.4)) <= 1.0
