"""Every atlas query against brute force on the sphere (haversine, R = 1,737,400 m), with
points at the poles and on both sides of the antimeridian, on the real PostGIS server."""
from __future__ import annotations

import json
import math
import uuid

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import Point

from atlas_db import queries as Q
from atlas_db.synthetic import age_provenance, atlas_provenance, synthetic_ages, synthetic_atlas, synthetic_catalogue
from etl.age_classes import AGE_CLASS_CODES
from etl.contracts import PROB_COLUMNS
from etl.load import load_ages_frame, load_atlas_frame, load_reference_frame
from etl.matching import is_match
from etl.moon import MOON_RADIUS_KM, great_circle_distance_m

N = 4000
# Query centres: both poles, both sides of the antimeridian, and ordinary places.
CENTRES = [(0.0, 90.0), (123.0, -90.0), (179.9, 0.0), (-179.9, 12.0), (180.0 - 1e-9, -45.0), (0.0, 0.0),
           (-60.0, 75.0), (45.0, -30.0)]
# Boundary tolerance: craters this close (km) to a radius are not asserted either way.
EPS_KM = 1e-6


def _special_points() -> pd.DataFrame:
    lon = [0.0, 77.0, -180.0, 179.999, -179.999, 179.5, -179.5, 0.0, 10.0, 170.0, -170.0, -45.0]
    lat = [90.0, -90.0, 0.0, 1.0, -1.0, 89.9, -89.9, -89.999, 89.999, 80.0, -80.0, 0.0]
    return pd.DataFrame({"lon": lon, "lat": lat, "diameter_km": np.linspace(1.0, 30.0, len(lon))})


@pytest.fixture(scope="module")
def world(atlas_engine):
    run = f"qtest-{uuid.uuid4().hex[:8]}"
    cat = pd.concat([synthetic_catalogue(N, seed=11), _special_points()], ignore_index=True)
    atlas = synthetic_atlas(len(cat), run, seed=11, catalogue=cat)
    load_atlas_frame(atlas, atlas_provenance(run), engine=atlas_engine)
    ages = synthetic_ages(atlas["crater_id"], seed=5)
    age_run = f"{run}-ages"
    load_ages_frame(ages, age_provenance(age_run, run), engine=atlas_engine)
    with atlas_engine.connect() as conn:
        yield {"run": run, "age_run": age_run, "atlas": atlas, "ages": ages, "conn": conn}


def _dist_km(df, lon, lat):
    return great_circle_distance_m(df["lon"].to_numpy(), df["lat"].to_numpy(), lon, lat) / 1000.0


@pytest.mark.parametrize("radius_km", [50.0, 400.0, 3000.0])
def test_radius_matches_brute_force(world, radius_km):
    atlas, checked = world["atlas"], 0
    for lon, lat in CENTRES:
        got = Q.craters_within(world["conn"], lon, lat, radius_km, run=world["run"])
        d = _dist_km(atlas, lon, lat)
        sure_in = set(atlas["crater_id"][d < radius_km - EPS_KM])
        sure_out = set(atlas["crater_id"][d > radius_km + EPS_KM])
        ids = set(got["crater_id"])
        assert sure_in <= ids, f"missed {len(sure_in - ids)} craters around {lon, lat}"
        assert not ids & sure_out
        np.testing.assert_allclose(got["distance_km"].to_numpy(float), _dist_km(got, lon, lat), rtol=1e-9, atol=1e-9)
        assert got["distance_km"].is_monotonic_increasing
        checked += len(sure_in)
    assert checked > 0


def test_radius_finds_craters_across_antimeridian_and_pole(world):
    near_180 = Q.craters_within(world["conn"], 179.99, 0.0, 100.0, run=world["run"])
    assert (near_180["lon"] < 0).any() and (near_180["lon"] > 0).any()
    # Every crater within 30 km of the north pole, whatever its longitude.
    polar = Q.craters_within(world["conn"], -100.0, 90.0, 30.0, run=world["run"])
    expected = world["atlas"][_dist_km(world["atlas"], 0.0, 90.0) <= 30.0 - EPS_KM]
    assert set(expected["crater_id"]) <= set(polar["crater_id"]) and len(expected) >= 3


@pytest.mark.parametrize("k", [1, 10])
def test_nearest_matches_brute_force(world, k):
    atlas = world["atlas"]
    for lon, lat in CENTRES:
        got = Q.nearest_craters(world["conn"], lon, lat, k=k, run=world["run"])
        expected = np.sort(_dist_km(atlas, lon, lat))[:k]
        assert len(got) == k
        np.testing.assert_allclose(got["distance_km"].to_numpy(), expected, rtol=1e-9, atol=1e-6)


def _in_polygon_brute(atlas, polygon) -> set:
    """Points covered by the polygon, trying each point at lon, lon - 360 and lon + 360."""
    pts = [shapely.points(atlas["lon"] + s, atlas["lat"]) for s in (-360.0, 0.0, 360.0)]
    mask = np.zeros(len(atlas), dtype=bool)
    for p in pts:
        mask |= shapely.covers(polygon, p)
    return set(atlas["crater_id"][mask])


def _near_boundary(atlas, polygon, tol_deg=1e-7) -> set:
    d = np.min([shapely.distance(polygon.boundary, shapely.points(atlas["lon"] + s, atlas["lat"]))
                for s in (-360.0, 0.0, 360.0)], axis=0)
    return set(atlas["crater_id"][d < tol_deg])


BOXES = [
    (170.0, -20.0, -170.0, 20.0),    # crosses the antimeridian
    (350.0, -10.0, 10.0, 10.0),      # 0..360 longitudes, crosses 0
    (-180.0, 80.0, 180.0, 90.0),     # polar cap, full width
    (-30.0, -90.0, 60.0, -70.0),     # touches the south pole
    (10.0, 5.0, 40.0, 35.0),         # ordinary
]


@pytest.mark.parametrize("box", BOXES)
def test_box_matches_brute_force(world, box):
    lon_min, lat_min, lon_max, lat_max = box
    atlas = world["atlas"]
    got = set(Q.craters_in_box(world["conn"], *box, run=world["run"])["crater_id"])
    width = (lon_max - lon_min) % 360.0 if lon_max - lon_min < 360 else 360.0
    dlon = (atlas["lon"] - lon_min) % 360.0
    in_lon = (dlon <= width) if width < 360 else np.ones(len(atlas), bool)
    expected = set(atlas["crater_id"][in_lon & (atlas["lat"] >= lat_min) & (atlas["lat"] <= lat_max)])
    assert len(expected) > 0
    assert got == expected


def test_polygon_wkt_and_geojson_across_antimeridian(world):
    atlas = world["atlas"]
    wkt = "POLYGON((160 -30, 200 -25, 195 40, 165 20, 160 -30))"
    poly = shapely.from_wkt(wkt)
    expected = _in_polygon_brute(atlas, poly)
    ambiguous = _near_boundary(atlas, poly)
    got = set(Q.craters_in_polygon(world["conn"], wkt, run=world["run"])["crater_id"])
    assert expected and (got ^ expected) <= ambiguous
    assert any(atlas.set_index("crater_id").loc[list(got), "lon"] < 0)  # found on the far side of 180
    geojson = json.dumps({"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(poly)})
    assert set(Q.craters_in_polygon(world["conn"], geojson, run=world["run"])["crater_id"]) == got


def test_polygon_around_pole(world):
    atlas = world["atlas"]
    poly = shapely.from_wkt("POLYGON((-180 70, 180 70, 180 90, -180 90, -180 70))")
    got = set(Q.craters_in_polygon(world["conn"], poly, run=world["run"])["crater_id"])
    assert got == _in_polygon_brute(atlas, poly) and len(got) > 10


@pytest.mark.parametrize("box", [(10.0, 0.0, 20.0, 10.0), (170.0, 60.0, -170.0, 90.0), (-180.0, -90.0, 180.0, 90.0)])
def test_region_area_matches_analytic_box(world, box):
    lon_min, lat_min, lon_max, lat_max = box
    width = math.radians((lon_max - lon_min) % 360.0 if lon_max - lon_min < 360 else 360.0)
    exact = MOON_RADIUS_KM ** 2 * width * (math.sin(math.radians(lat_max)) - math.sin(math.radians(lat_min)))
    got = Q.region_area_km2(world["conn"], Q.box_wkt(*box))
    assert got == pytest.approx(exact, rel=1e-9)


def test_size_frequency_matches_brute_force(world):
    box = (150.0, -40.0, -150.0, 40.0)
    atlas = world["atlas"]
    wkt = Q.box_wkt(*box)
    inside = atlas[atlas["crater_id"].isin(_in_polygon_brute(atlas, shapely.from_wkt(wkt)))]
    bins = [1.0, 2.0, 5.0, 10.0, 50.0]
    got = Q.size_frequency(world["conn"], wkt, diameters_km=bins, run=world["run"])
    area = MOON_RADIUS_KM ** 2 * math.radians(60.0) * 2 * math.sin(math.radians(40.0))
    expected = [(inside["diameter_km"] >= d).sum() for d in bins]
    assert got["diameter_km"].tolist() == bins
    assert got["n_cumulative"].tolist() == expected and expected[0] > 100
    np.testing.assert_allclose(got["density_per_km2"], np.array(expected) / area, rtol=1e-9)
    default = Q.size_frequency(world["conn"], wkt, run=world["run"])
    assert default["n_cumulative"].is_monotonic_decreasing and (default["n_cumulative"] > 0).all()
    assert default["n_cumulative"].iloc[0] == len(inside)  # smallest bin 1/16 km holds every crater


def test_age_class_summary_matches_pandas(world):
    atlas, ages = world["atlas"], world["ages"]
    wkt = "POLYGON((-60 -60, 60 -60, 60 60, -60 60, -60 -60))"
    ids = _in_polygon_brute(atlas, shapely.from_wkt(wkt))
    sel = ages[ages["crater_id"].isin(ids)]
    got = Q.age_class_summary(world["conn"], wkt, age_run=world["age_run"])
    assert got["age_class"].tolist() == list(AGE_CLASS_CODES)
    for _, row in got.iterrows():
        part = sel[sel["age_class"] == row["age_class"]]
        assert row["n_craters"] == len(part)
        for p in PROB_COLUMNS:
            assert row[f"mean_{p}"] == pytest.approx(part[p].mean(), rel=1e-9)
    assert got["n_craters"].sum() == len(sel) > 100


def test_new_craters_use_the_evaluator_rule(world, atlas_engine):
    """'New' craters = no reference crater matches, by etl.matching's rule, checked pairwise."""
    rng = np.random.default_rng(3)
    atlas = world["atlas"].iloc[:600]
    # A reference catalogue: some atlas craters shifted/rescaled inside and outside the rule.
    pick = atlas.sample(400, random_state=1)
    shift_frac = rng.uniform(0.0, 0.9, len(pick))
    bearing = rng.uniform(0, 2 * np.pi, len(pick))
    dist_deg = np.degrees(shift_frac * pick["diameter_km"].to_numpy() / MOON_RADIUS_KM)
    ref = pd.DataFrame({
        "lon": (pick["lon"].to_numpy() + dist_deg * np.sin(bearing) / np.maximum(np.cos(np.radians(pick["lat"])), 0.05)
                + 180.0) % 360.0 - 180.0,
        "lat": np.clip(pick["lat"].to_numpy() + dist_deg * np.cos(bearing), -90, 90),
        "diameter_km": pick["diameter_km"].to_numpy() * rng.uniform(0.5, 2.0, len(pick)),
    })
    name = f"ref-{uuid.uuid4().hex[:8]}"
    load_reference_frame(ref, name, engine=atlas_engine)
    got = set(Q.new_craters(world["conn"], world["run"], name)["crater_id"])
    full = world["atlas"]
    matched = np.zeros(len(full), dtype=bool)
    for _, r in ref.iterrows():
        matched |= is_match(full["lon"], full["lat"], full["diameter_km"], r["lon"], r["lat"], r["diameter_km"])
    expected = set(full["crater_id"][~matched])
    assert got == expected
    assert 0 < matched.sum() < 400  # the rule both accepts and rejects some shifted copies


def test_rim_view_is_a_circle_on_the_sphere(world):
    rows = world["conn"].exec_driver_sql(
        "SELECT a.lon, a.lat, a.diameter_km, ST_AsText(r.rim) FROM crater_rims r JOIN crater_atlas a USING (crater_pk) "
        "WHERE a.run_name = %(run)s ORDER BY a.diameter_km DESC LIMIT 20", {"run": world["run"]}).fetchall()
    assert len(rows) == 20
    for lon, lat, d, wkt in rows:
        ring = np.asarray(shapely.from_wkt(wkt).exterior.coords)
        np.testing.assert_allclose(great_circle_distance_m(ring[:, 0], ring[:, 1], lon, lat) / 1000.0, d / 2,
                                   rtol=1e-9)


def test_region_inputs_are_checked():
    with pytest.raises(ValueError, match="Polygon"):
        Q.region_wkt("POINT(1 2)")
    with pytest.raises(ValueError, match="latitudes"):
        Q.region_wkt("POLYGON((0 0, 1 0, 1 95, 0 0))")
    with pytest.raises(ValueError, match="not valid"):
        Q.region_wkt("POLYGON((0 0, 1 1, 1 0, 0 1, 0 0))")
    assert Point(175, 0).within(shapely.from_wkt(Q.box_wkt(170, -1, -170, 1)))


def test_point_query_inputs_are_checked_in_python_and_in_sql(world):
    conn = world["conn"]
    with pytest.raises(ValueError, match="latitude"):
        Q.craters_within(conn, 0.0, 95.0, 10.0)
    with pytest.raises(ValueError, match="radius_km"):
        Q.craters_within(conn, 0.0, 0.0, -1.0)
    with pytest.raises(ValueError, match="k must be"):
        Q.nearest_craters(conn, 0.0, 0.0, k=0)
    # The SQL functions refuse the same inputs for users who call them directly.
    from sqlalchemy.exc import DataError

    for sql in ("SELECT * FROM deepcraters_craters_within(0, 0, 'NaN')",
                "SELECT * FROM deepcraters_nearest_craters(0, -91, 10)",
                "SELECT * FROM deepcraters_nearest_craters(0, 0, NULL)"):
        with pytest.raises(DataError, match="need finite lon"):
            conn.exec_driver_sql(sql).fetchall()
        conn.rollback()


def test_cap_boxes_cover_the_cap_and_split_at_the_antimeridian(world):
    """The index step's boxes: every point of the cap's rim lies in one of them, and a cap
    across 180 gets two boxes that stay inside -180..180."""
    conn = world["conn"]
    for lon, lat, radius_km in [(179.9, 10.0, 50.0), (-179.95, -30.0, 200.0), (20.0, 89.5, 100.0),
                                (0.0, 0.0, 3000.0), (45.0, -60.0, 500.0)]:
        wkts = [r[0] for r in conn.exec_driver_sql(
            "SELECT ST_AsText(unnest(deepcraters_cap_boxes(%(lon)s, %(lat)s, %(m)s)))",
            {"lon": lon, "lat": lat, "m": radius_km * 1000.0})]
        boxes = [shapely.from_wkt(w) for w in wkts]
        assert all(-180 <= b.bounds[0] and b.bounds[2] <= 180 for b in boxes)
        assert len(boxes) == (2 if abs(lon) > 179 and abs(lat) < 80 else 1)
        # Rim points at the radius (slightly inside it), by the destination formula on the sphere.
        a = radius_km * 0.999999 / MOON_RADIUS_KM
        t = np.linspace(0, 2 * np.pi, 720)
        la, lo = np.radians(lat), np.radians(lon)
        rim_lat = np.arcsin(np.sin(la) * np.cos(a) + np.cos(la) * np.sin(a) * np.cos(t))
        rim_lon = lo + np.arctan2(np.sin(t) * np.sin(a) * np.cos(la), np.cos(a) - np.sin(la) * np.sin(rim_lat))
        rim_lon = (np.degrees(rim_lon) + 180.0) % 360.0 - 180.0
        pts = shapely.points(rim_lon, np.degrees(rim_lat))
        assert np.all(np.any([shapely.covers(b, pts) for b in boxes], axis=0)), (lon, lat, radius_km)


def test_search_answers_read_through_binary_copy_equal_the_text_rows(atlas_engine):
    """The spatial searches read their answers through binary COPY (``_search_frame``): the
    DataFrame equals the one built from the driver's text rows, column for column and dtype
    for dtype, for ids of one length (one record array), of mixed lengths and non-ASCII ids
    (each row walked), two runs with names of different lengths, and an empty answer."""
    runs = [f"bin-{uuid.uuid4().hex[:8]}", f"binary-longer-{uuid.uuid4().hex[:8]}"]
    cat = synthetic_catalogue(400, seed=12)
    cat["lon"], cat["lat"] = cat["lon"] * 0.02 + 33.0, cat["lat"] * 0.02 - 21.0  # within 130 km of (33, -21)
    odd = synthetic_atlas(len(cat), runs[1], seed=12, catalogue=cat)
    odd["crater_id"] = [f"k{i}" if i % 3 else f"krater-{i}-ä€😀" for i in range(len(odd))]
    load_atlas_frame(synthetic_atlas(len(cat), runs[0], seed=12, catalogue=cat), atlas_provenance(runs[0]),
                     engine=atlas_engine)
    load_atlas_frame(odd, atlas_provenance(runs[1]), engine=atlas_engine)
    within = "SELECT * FROM deepcraters_craters_within(%(lon)s, %(lat)s, %(radius_km)s, %(run)s)"
    with atlas_engine.connect() as conn:
        for run, radius_km, rows in ((runs[0], 200.0, 400), (runs[1], 200.0, 400), (None, 1e-6, 0)):
            got = Q.craters_within(conn, 33.0, -21.0, radius_km, run=run)
            text_rows = Q._frame(conn, within, {"lon": 33.0, "lat": -21.0, "radius_km": radius_km, "run": run})
            assert len(got) == rows
            pd.testing.assert_frame_equal(got, text_rows)
        both = Q.craters_in_box(conn, 28.0, -24.0, 38.0, -18.0)
        both = both[both["run_name"].isin(runs)].reset_index(drop=True)
        assert len(both) == 800 and set(both["run_name"]) == set(runs)
        text_rows = Q._frame(conn, "SELECT * FROM deepcraters_craters_in_region(ST_GeomFromText(%(region)s, 104903), "
                                   "%(run)s)", {"region": Q.box_wkt(28.0, -24.0, 38.0, -18.0), "run": None})
        pd.testing.assert_frame_equal(both, text_rows[text_rows["run_name"].isin(runs)].reset_index(drop=True))
        near = Q.nearest_craters(conn, 33.0, -21.0, k=5, run=runs[1])
        assert set(near["crater_id"]) <= set(odd["crater_id"]) and len(near) == 5


def _ring_at_distance(lon, lat, distance_m, n, seed):
    """n lon/lat points at ``distance_m`` (destination formula on the sphere) from lon/lat, random bearings."""
    t = np.random.default_rng(seed).uniform(0, 2 * np.pi, n)
    a, la, lo = distance_m / (MOON_RADIUS_KM * 1000.0), np.radians(lat), np.radians(lon)
    rim_lat = np.arcsin(np.sin(la) * np.cos(a) + np.cos(la) * np.sin(a) * np.cos(t))
    rim_lon = lo + np.arctan2(np.sin(t) * np.sin(a) * np.cos(la), np.cos(a) - np.sin(la) * np.sin(rim_lat))
    return (np.degrees(rim_lon) + 180.0) % 360.0 - 180.0, np.degrees(rim_lat)


@pytest.fixture(scope="module")
def rim_world(atlas_engine):
    """Craters on the rims of caps of 50 km, 1,200 km and 3,000 km around three places (one
    at the antimeridian, one near a pole), each rim at the radius and within a micrometre to a
    millimetre of it, inside and outside: where a search's test could round either way."""
    run = f"rimtest-{uuid.uuid4().hex[:8]}"
    caps = [(20.5, -10.0, 50.0), (179.99, 3.0, 1200.0), (-60.0, 85.0, 3000.0)]
    lons, lats = [], []
    for c, (lon, lat, radius_km) in enumerate(caps):
        for j, offset_m in enumerate((-1e-3, -1e-6, -1e-8, 0.0, 0.0, 1e-8, 1e-6, 1e-3)):
            rl, rt = _ring_at_distance(lon, lat, radius_km * 1000.0 + offset_m, 60, seed=100 * c + j)
            lons += list(rl)
            lats += list(rt)
    cat = pd.DataFrame({"lon": lons, "lat": lats, "diameter_km": np.full(len(lons), 1.0)})
    atlas = synthetic_atlas(len(cat), run, seed=13, catalogue=cat)
    load_atlas_frame(atlas, atlas_provenance(run), engine=atlas_engine)
    with atlas_engine.connect() as conn:
        yield {"run": run, "caps": caps, "conn": conn}


def test_radius_keeps_exactly_the_craters_the_haversine_keeps(rim_world):
    """The cap search's cheap test (squared chord between unit vectors) decides only where it is
    clear, the haversine the rest: the answer is exactly the craters whose haversine distance
    (deepcraters_distance_m, the search's rule before the unit vectors) is within the radius,
    also for craters on the rim, within 1e-8 m of it; distances agree with it to 1e-8 m, nearest first."""
    conn, run = rim_world["conn"], rim_world["run"]
    undecided = 0
    for lon, lat, radius_km in rim_world["caps"]:
        got = Q.craters_within(conn, lon, lat, radius_km, run=run)
        rule = pd.DataFrame(conn.exec_driver_sql(
            "SELECT crater_id, deepcraters_distance_m(lon, lat, %(lon)s, %(lat)s) AS m, "
            "(unit_x - cosd(%(lat)s) * cosd(%(lon)s)) ^ 2 + (unit_y - cosd(%(lat)s) * sind(%(lon)s)) ^ 2 "
            "+ (unit_z - sind(%(lat)s)) ^ 2 <= (2 * sin(%(m)s / 3474800.0)) ^ 2 AS chord_in "
            "FROM crater_atlas WHERE run_name = %(run)s",
            {"lon": lon, "lat": lat, "m": radius_km * 1000.0, "run": run}).fetchall(),
            columns=["crater_id", "m", "chord_in"])
        keep = rule[rule["m"] <= radius_km * 1000.0]
        assert len(keep) > 200 and set(got["crater_id"]) == set(keep["crater_id"]), (lon, lat, radius_km)
        undecided += int((rule["chord_in"] != (rule["m"] <= radius_km * 1000.0)).sum())
        by_id = keep.set_index("crater_id")["m"]
        np.testing.assert_allclose(got["distance_km"].to_numpy() * 1000.0, by_id[got["crater_id"]].to_numpy(),
                                   rtol=0, atol=1e-8)
        assert got["distance_km"].is_monotonic_increasing
    # the rims do put craters where a chord alone would have decided otherwise than the haversine
    assert undecided > 0


def test_radius_and_nearest_distances_far_across_the_moon(world):
    """Past a quarter of the circumference (the haversine decides every candidate) and out to
    the antipode, where the chord's asin would lose digits: distances still agree with brute
    force, and a cap of half the circumference holds every crater."""
    atlas, conn = world["atlas"], world["conn"]
    for lon, lat, radius_km in [(45.0, -30.0, 4000.0), (0.0, 0.0, math.pi * MOON_RADIUS_KM)]:
        got = Q.craters_within(conn, lon, lat, radius_km, run=world["run"])
        d = _dist_km(atlas, lon, lat)
        assert set(atlas["crater_id"][d < radius_km - EPS_KM]) <= set(got["crater_id"])
        np.testing.assert_allclose(got["distance_km"].to_numpy(), _dist_km(got, lon, lat), rtol=1e-9, atol=1e-6)
    assert len(got) == len(atlas)
    far = Q.nearest_craters(conn, 180.0 - 45.0, 30.0, k=3, run=world["run"])  # the antipode of (-45, -30)
    np.testing.assert_allclose(far["distance_km"], np.sort(_dist_km(atlas, 135.0, 30.0))[:3], rtol=1e-9, atol=1e-6)


def test_api_orders_unordered_searches_as_the_sql_functions_do(atlas_engine):
    """The API sorts the rows of the unordered radius and region searches itself (numpy): row
    for row the answer of the ordered SQL functions, also where only the tie-breaks decide:
    craters at one place in three runs (equal distances: run names byte by byte, 'ä' after
    'b', a prefix first) and at one place within a run (crater ids byte by byte), through the
    record-array path (one run, ids of one length) and the row-walking path (mixed lengths)."""
    tag = uuid.uuid4().hex[:8]
    runs = [f"tie-{tag}-b", f"tie-{tag}-\u00e4", f"tie-{tag}"]
    cat = synthetic_catalogue(300, seed=14)
    cat["lon"], cat["lat"] = cat["lon"] * 0.01 - 77.0, cat["lat"] * 0.01 + 41.0  # within 50 km of (-77, 41)
    twice = cat.iloc[:40].assign(diameter_km=lambda d: d["diameter_km"] * 1.5)  # other ids, the same places
    cat = pd.concat([cat, twice], ignore_index=True)  # 40 places held twice in each run
    for i, run in enumerate(runs):
        atlas = synthetic_atlas(len(cat), run, seed=14, catalogue=cat)
        if i == 1:  # ids of mixed lengths, non-ASCII, some a prefix of another
            atlas["crater_id"] = [f"c{j}" if j % 4 else f"c{j}\u00e4" for j in range(len(atlas))]
        load_atlas_frame(atlas, atlas_provenance(run), engine=atlas_engine)
    ordered_within = "SELECT * FROM deepcraters_craters_within(%(lon)s, %(lat)s, %(radius_km)s, %(run)s)"
    ordered_region = ("SELECT * FROM deepcraters_craters_in_region(ST_GeomFromText(%(region)s, 104903), %(run)s)")
    box = (-79.0, 40.0, -75.0, 42.0)
    with atlas_engine.connect() as conn:
        for run in (runs[0], runs[1], None):
            params = {"lon": -77.0, "lat": 41.0, "radius_km": 100.0, "run": run}
            got = Q.craters_within(conn, -77.0, 41.0, 100.0, run=run)
            want = Q._frame(conn, ordered_within, params)
            got, want = (f[f["run_name"].isin(runs)].reset_index(drop=True) for f in (got, want))
            assert len(got) == (len(cat) if run else 3 * len(cat))
            assert got["distance_km"].duplicated().sum() >= (40 if run else 2 * len(cat))  # ties to break
            pd.testing.assert_frame_equal(got, want)
            got = Q.craters_in_box(conn, *box, run=run)
            want = Q._frame(conn, ordered_region, {"region": Q.box_wkt(*box), "run": run})
            got, want = (f[f["run_name"].isin(runs)].reset_index(drop=True) for f in (got, want))
            assert len(got) == len(want) == (len(cat) if run else 3 * len(cat))
            pd.testing.assert_frame_equal(got, want)
        both = Q.craters_within(conn, -77.0, 41.0, 100.0)
        both = both[both["run_name"].isin(runs)]
        first = both.drop_duplicates(["lon", "lat"])  # each place's first row: the byte-wise smallest run name
        assert set(first["run_name"]) == {runs[2]}
