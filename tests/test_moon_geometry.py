"""Moon geometry: distances, CRSs, lon/lat <-> pixel, rim circles -> boxes, checked
against independent formulas (vector dot products, textbook projection equations,
pyproj's geodesic solver)."""
from __future__ import annotations

import math

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin

from etl.geometry import (
    LunarCRSError,
    PixelGrid,
    boxes_px_to_craters,
    check_lunar_crs,
    crater_boxes_px,
    mercator_crs,
    polar_stereographic_crs,
    rim_lonlat,
    simple_cylindrical_crs,
)
from etl.moon import MOON_RADIUS_M, great_circle_distance_m, normalize_lon, unit_vector

R = MOON_RADIUS_M
SPHERE = pyproj.Geod(a=R, b=R)


def _dot_distance_m(lon1, lat1, lon2, lat2):
    """Independent great-circle distance: angle between unit vectors (arctan2 of cross and dot)."""
    a, b = unit_vector(lon1, lat1), unit_vector(lon2, lat2)
    return R * np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), np.sum(a * b, axis=-1))


def _grid(crs, pixel_m=100.0, half_size_m=500_000.0, x0_m=0.0, y0_m=0.0):
    n = int(2 * half_size_m / pixel_m)
    return PixelGrid(crs, from_origin(x0_m - half_size_m, y0_m + half_size_m, pixel_m, pixel_m), n, n)


# ----------------------------------------------------------------------------- moon

def test_great_circle_distance_matches_vector_formula_across_antimeridian_and_poles():
    rng = np.random.default_rng(0)
    lon1, lon2 = rng.uniform(-180, 180, 200), rng.uniform(-180, 180, 200)
    lat1, lat2 = rng.uniform(-90, 90, 200), rng.uniform(-90, 90, 200)
    # Special pairs: across the antimeridian, over a pole, antipodes.
    lon1 = np.r_[lon1, 179.9, 0.0, 10.0, 30.0]
    lat1 = np.r_[lat1, 0.0, 89.0, -89.5, 20.0]
    lon2 = np.r_[lon2, -179.9, 180.0, -170.0, -150.0]
    lat2 = np.r_[lat2, 0.0, 89.0, -89.5, -20.0]
    np.testing.assert_allclose(great_circle_distance_m(lon1, lat1, lon2, lat2),
                               _dot_distance_m(lon1, lat1, lon2, lat2), rtol=1e-9, atol=1e-3)
    # 0.2 degrees of longitude at the equator, not 359.8.
    assert great_circle_distance_m(179.9, 0.0, -179.9, 0.0) == pytest.approx(R * math.radians(0.2), rel=1e-9)
    # Two points 1 degree from the north pole on opposite meridians are 2 degrees apart.
    assert great_circle_distance_m(0.0, 89.0, 180.0, 89.0) == pytest.approx(R * math.radians(2.0), rel=1e-9)


def test_normalize_lon_maps_0_360_to_pm180():
    np.testing.assert_allclose(normalize_lon([0.0, 90.0, 180.0, 270.0, 359.5, -190.0]),
                               [0.0, 90.0, -180.0, -90.0, -0.5, 170.0])


# ------------------------------------------------------------------------------ CRS

@pytest.mark.parametrize("code", ["IAU_2015:30100", "IAU_2015:30110", "IAU_2015:30135", "ESRI:104903",
                                  "+proj=eqc +lon_0=0 +R=1737400 +units=m +no_defs"])
def test_lunar_crs_accepted(code):
    crs = check_lunar_crs(code, source="a.tif")
    assert pyproj.CRS.from_user_input(crs.to_wkt()).ellipsoid.semi_major_metre == pytest.approx(MOON_RADIUS_M)


def test_earth_and_missing_crs_refused_unless_assumed():
    with pytest.raises(LunarCRSError, match=r"dom\.tif.*EPSG:4326.*Earth.*assume_crs"):
        check_lunar_crs("EPSG:4326", source="dom.tif")
    with pytest.raises(LunarCRSError, match=r"dom\.tif has no CRS; pass assume_crs"):
        check_lunar_crs(None, source="dom.tif")
    assert check_lunar_crs("EPSG:4326", source="dom.tif", assume_crs="IAU_2015:30100").to_string() == "IAU_2015:30100"
    assert check_lunar_crs(None, assume_crs="IAU_2015:30110").to_string() == "IAU_2015:30110"
    with pytest.raises(LunarCRSError, match="not a lunar CRS"):
        check_lunar_crs(None, source="dom.tif", assume_crs="EPSG:4326")


def test_crs_factories_are_on_the_moon_sphere():
    for crs in (simple_cylindrical_crs(), simple_cylindrical_crs(180.0), simple_cylindrical_crs(45.0),
                mercator_crs(), polar_stereographic_crs(True), polar_stereographic_crs(False)):
        p = pyproj.CRS.from_wkt(crs.to_wkt())
        assert p.is_projected and p.ellipsoid.semi_major_metre == R and p.ellipsoid.semi_minor_metre == R
    merc = pyproj.CRS.from_wkt(mercator_crs().to_wkt())
    params = {q.name: q.value for q in merc.coordinate_operation.params}
    assert params["Latitude of 1st standard parallel"] == 33.0


def test_pixel_grid_from_dataset_checks_crs(tmp_path):
    path = tmp_path / "earth.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(0, 4, 1, 1)) as ds:
        ds.write(np.zeros((1, 4, 4), np.uint8))
    with rasterio.open(path) as ds:
        with pytest.raises(LunarCRSError, match="earth.tif"):
            PixelGrid.from_dataset(ds)
        grid = PixelGrid.from_dataset(ds, assume_crs="IAU_2015:30100")
    assert grid.crs.to_string() == "IAU_2015:30100" and grid.shape == (4, 4)


# ----------------------------------------------------------------- lon/lat <-> pixel

def test_simple_cylindrical_pixels_match_equirectangular_formula():
    grid = _grid(simple_cylindrical_crs(), pixel_m=250.0, half_size_m=2_000_000.0)
    lon = np.array([0.0, 10.0, -30.5, 60.0])
    lat = np.array([0.0, -20.0, 45.0, 60.0])
    col, row = grid.lonlat_to_pixel(lon, lat)
    np.testing.assert_allclose(col, (R * np.radians(lon) + 2_000_000.0) / 250.0, atol=1e-6)
    np.testing.assert_allclose(row, (2_000_000.0 - R * np.radians(lat)) / 250.0, atol=1e-6)
    back_lon, back_lat = grid.pixel_to_lonlat(col, row)
    np.testing.assert_allclose(back_lon, lon, atol=1e-9)
    np.testing.assert_allclose(back_lat, lat, atol=1e-9)


def test_mercator_and_polar_pixels_match_textbook_formulas():
    merc = _grid(mercator_crs(33.0), half_size_m=3_000_000.0)
    lon, lat = np.array([5.0, -40.0, 70.0]), np.array([33.0, -10.0, 70.0])
    k0 = math.cos(math.radians(33.0))
    col, row = merc.lonlat_to_pixel(lon, lat)
    np.testing.assert_allclose(col, (R * k0 * np.radians(lon) + 3e6) / 100.0, atol=1e-6)
    np.testing.assert_allclose(row, (3e6 - R * k0 * np.log(np.tan(np.pi / 4 + np.radians(lat) / 2))) / 100.0, atol=1e-6)

    south = _grid(polar_stereographic_crs(north=False))
    lon, lat = np.array([0.0, 90.0, -135.0, 179.9]), np.array([-90.0, -85.0, -88.0, -86.0])
    rho = 2 * R * np.tan(np.pi / 4 + np.radians(lat) / 2)
    col, row = south.lonlat_to_pixel(lon, lat)
    np.testing.assert_allclose(col, (rho * np.sin(np.radians(lon)) + 5e5) / 100.0, atol=1e-6)
    np.testing.assert_allclose(row, (5e5 - rho * np.cos(np.radians(lon))) / 100.0, atol=1e-6)
    back_lon, back_lat = south.pixel_to_lonlat(col[1:], row[1:])
    np.testing.assert_allclose(back_lat, lat[1:], atol=1e-9)
    np.testing.assert_allclose(great_circle_distance_m(back_lon, back_lat, lon[1:], lat[1:]), 0.0, atol=1e-3)


def test_geographic_grid_running_0_to_360_wraps_longitudes():
    # A global 0..360 geographic mosaic, 0.5 degree pixels: lon -90 is column 540.
    grid = PixelGrid("IAU_2015:30100", from_origin(0.0, 90.0, 0.5, 0.5), 720, 360)
    col, row = grid.lonlat_to_pixel([-90.0, 10.0, 359.0], [0.0, 45.0, -89.0])
    np.testing.assert_allclose(col, [540.0, 20.0, 718.0])
    np.testing.assert_allclose(row, [180.0, 90.0, 358.0])
    lon, _ = grid.pixel_to_lonlat(540.0, 180.0)
    assert lon == pytest.approx(-90.0)
    assert grid.pixel_size_m == pytest.approx(R * math.radians(0.5))


def test_window_and_pyramid_levels_are_consistent():
    grid = _grid(simple_cylindrical_crs())
    lon, lat = 3.0, 4.0
    col, row = grid.lonlat_to_pixel(lon, lat)
    sub = grid.window(1000, 2000, 512, 512)
    sub_col, sub_row = sub.lonlat_to_pixel(lon, lat)
    assert (sub_col, sub_row) == pytest.approx((col - 1000, row - 2000))
    level = grid.downsampled(4)
    assert level.lonlat_to_pixel(lon, lat) == pytest.approx((col / 4, row / 4))
    assert level.pixel_size_m == pytest.approx(400.0) and level.width == math.ceil(grid.width / 4)


# -------------------------------------------------------------------------- rims/boxes

def test_rim_points_lie_at_the_crater_radius_on_the_sphere():
    lon = np.array([0.0, 179.9, -179.9, 45.0, 10.0])
    lat = np.array([0.0, 10.0, -10.0, 89.5, -89.9])
    diameter_km = np.array([10.0, 50.0, 20.0, 80.0, 30.0])
    rim_lon, rim_lat = rim_lonlat(lon, lat, diameter_km, n_points=36)
    assert rim_lon.shape == (5, 36) and np.all(np.abs(rim_lon) <= 180.0)
    radius_m = diameter_km[:, None] * 500.0
    np.testing.assert_allclose(_dot_distance_m(lon[:, None], lat[:, None], rim_lon, rim_lat),
                               np.broadcast_to(radius_m, rim_lon.shape), rtol=1e-7)
    # pyproj's geodesic solver on the same sphere agrees point by point.
    az = np.broadcast_to(np.linspace(0, 360, 36, endpoint=False), rim_lon.shape)
    g_lon, g_lat, _ = SPHERE.fwd(np.broadcast_to(lon[:, None], az.shape), np.broadcast_to(lat[:, None], az.shape),
                                 az, np.broadcast_to(radius_m, az.shape))
    np.testing.assert_allclose(great_circle_distance_m(g_lon, g_lat, rim_lon, rim_lat), 0.0, atol=1e-3)


def test_box_at_60_degrees_is_twice_as_wide_as_tall_in_simple_cylindrical():
    grid = _grid(simple_cylindrical_crs(), half_size_m=3_000_000.0)
    boxes = crater_boxes_px(grid, [0.0, 20.0, 20.0], [0.0, 60.0, -60.0], [30.0, 30.0, 30.0])
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert width[0] / height[0] == pytest.approx(1.0, rel=0.02)
    assert width[1] / height[1] == pytest.approx(2.0, rel=0.02)
    assert width[2] / height[2] == pytest.approx(2.0, rel=0.02)
    # Height is the diameter along a meridian: R * angle / pixel size.
    assert height[1] == pytest.approx(30_000.0 / 100.0, rel=1e-3)


def test_boxes_across_the_antimeridian():
    d_km = np.array([20.0, 20.0])
    reference = crater_boxes_px(_grid(simple_cylindrical_crs(), half_size_m=3e6), [0.0], [0.0], [20.0])[0]
    ref_w = reference[2] - reference[0]
    # clon = 0 grid whose right edge is the antimeridian: each crater gets one small box
    # overhanging its own edge, not a box across the whole map.
    x_edge = R * math.pi
    east = PixelGrid(simple_cylindrical_crs(), from_origin(x_edge - 100_000, 50_000, 100.0, 100.0), 1000, 1000)
    boxes = crater_boxes_px(east, [179.9, -179.9], [0.0, 0.0], d_km)
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], ref_w, rtol=1e-9)
    assert boxes[0, 0] < 1000 < boxes[0, 2]  # 179.9 straddles the right edge
    # -179.9 lies at the world's far left (x = -pi R), whole, as in any projected map.
    expected_col = (-x_edge + R * math.radians(0.1) - (x_edge - 100_000)) / 100.0
    assert (boxes[1, 0] + boxes[1, 2]) / 2 == pytest.approx(expected_col, rel=1e-9)
    # In a clon = 180 grid both craters sit side by side in the middle, 0.2 degrees apart.
    mid = PixelGrid(simple_cylindrical_crs(180.0), from_origin(-50_000, 50_000, 100.0, 100.0), 1000, 1000)
    boxes = crater_boxes_px(mid, [179.9, -179.9], [0.0, 0.0], d_km)
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], ref_w, rtol=1e-9)
    centre_gap_px = np.diff((boxes[:, 0] + boxes[:, 2]) / 2)[0]
    assert centre_gap_px == pytest.approx(R * math.radians(0.2) / 100.0, rel=1e-6)


def test_pole_enclosing_rims():
    d_km = 200.0  # radius 3.3 degrees: encloses the pole from 88 degrees
    ps = _grid(polar_stereographic_crs(True))
    box = crater_boxes_px(ps, [30.0], [88.0], [d_km])[0]
    pole_col, pole_row = ps.lonlat_to_pixel(0.0, 90.0)
    assert box[0] < pole_col < box[2] and box[1] < pole_row < box[3]
    # Conformal near the pole: a near-square box about D / pixel wide.
    assert (box[2] - box[0]) / (box[3] - box[1]) == pytest.approx(1.0, rel=1e-3)
    assert box[2] - box[0] == pytest.approx(2000.0, rel=0.01)
    eqc = PixelGrid(simple_cylindrical_crs(), from_origin(-R * math.pi, R * math.pi / 2, 1000.0, 1000.0),
                    int(2 * R * math.pi / 1000), int(R * math.pi / 1000))
    box = crater_boxes_px(eqc, [30.0], [88.0], [d_km])[0]
    assert box[2] - box[0] == pytest.approx(eqc.width, rel=1e-3)  # all longitudes
    assert box[1] == pytest.approx(0.0, abs=1e-6)  # reaches the pole row
    assert np.isnan(crater_boxes_px(_grid(mercator_crs()), [30.0], [88.0], [d_km])).all()


@pytest.mark.parametrize("crs, lon, lat", [
    (simple_cylindrical_crs(), [0.0, 2.0, -3.0, 179.95], [0.0, 60.0, -45.0, 1.0]),
    (mercator_crs(33.0), [0.0, 2.0, -3.0, 179.95], [0.0, 60.0, 33.0, -70.0]),
    (polar_stereographic_crs(True), [0.0, 135.0, 179.9, -179.9], [89.0, 85.0, 87.0, 87.5]),
])
def test_box_to_crater_round_trip(crs, lon, lat):
    grid = _grid(crs)
    diameter_km = np.array([5.0, 40.0, 120.0, 12.0])
    boxes = crater_boxes_px(grid, lon, lat, diameter_km)
    back_lon, back_lat, back_d = boxes_px_to_craters(grid, boxes)
    np.testing.assert_allclose(back_d, diameter_km, rtol=1e-3)
    assert np.all(great_circle_distance_m(back_lon, back_lat, lon, lat) <= 1e-3 * 500 * diameter_km)
    np.testing.assert_allclose(crater_boxes_px(grid, back_lon, back_lat, back_d), boxes, atol=0.05)
    # Without refinement the first guess is already close (the sphere-measured size).
    _, _, first_d = boxes_px_to_craters(grid, boxes, refine_iterations=0)
    np.testing.assert_allclose(first_d, diameter_km, rtol=0.02)


def test_box_to_crater_round_trip_in_a_geographic_grid_across_the_seam():
    # A global 0..360 degree mosaic (as many lunar products are): -0.05 and 359.95 are one place.
    grid = PixelGrid("IAU_2015:30100", from_origin(0.0, 90.0, 0.01, 0.01), 36000, 18000)
    lon, lat, diameter_km = np.array([-0.05, 120.0, -60.0]), np.array([0.0, 60.0, -30.0]), np.array([8.0, 30.0, 15.0])
    boxes = crater_boxes_px(grid, lon, lat, diameter_km)
    assert boxes[0, 0] < 36000 < boxes[0, 2]  # overhangs the right edge (360), one box
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert width[1] / height[1] == pytest.approx(2.0, rel=0.02)
    back_lon, back_lat, back_d = boxes_px_to_craters(grid, boxes)
    np.testing.assert_allclose(back_d, diameter_km, rtol=1e-3)
    assert np.all(great_circle_distance_m(back_lon, back_lat, lon, lat) <= 0.5 * diameter_km)


def test_box_size_follows_the_grid_not_the_diameter_over_resolution():
    # Same crater, 4x coarser pyramid level: a box 4x smaller, decoded to the same diameter.
    grid = _grid(mercator_crs())
    boxes = crater_boxes_px(grid, [1.0], [40.0], [25.0])
    coarse = crater_boxes_px(grid.downsampled(4), [1.0], [40.0], [25.0])
    np.testing.assert_allclose(coarse, boxes / 4.0, atol=1e-9)
    assert boxes_px_to_craters(grid.downsampled(4), coarse)[2][0] == pytest.approx(25.0, rel=1e-4)
    # Mercator scale at 40 degrees, true at 33: width = D * cos33 / cos40 / pixel.
    expected_px = 25_000.0 * math.cos(math.radians(33)) / math.cos(math.radians(40)) / 100.0
    assert boxes[0, 2] - boxes[0, 0] == pytest.approx(expected_px, rel=2e-3)


def test_rotation_free_affine_and_flipped_rows():
    # A south-up grid (positive e) still gives ordered XYXY boxes.
    grid = PixelGrid(simple_cylindrical_crs(), Affine(100.0, 0, -5e5, 0, 100.0, -5e5), 10000, 10000)
    box = crater_boxes_px(grid, [0.0], [10.0], [20.0])[0]
    assert box[0] < box[2] and box[1] < box[3]
    assert (box[1] + box[3]) / 2 > 5000  # north is down
