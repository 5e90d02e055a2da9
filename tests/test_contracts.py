"""The atlas / age file contract and the crater matching rule (no database)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from atlas_db.synthetic import age_provenance, atlas_provenance, synthetic_ages, synthetic_atlas
from etl.age_classes import AGE_CLASS_CODES, AgeClass
from etl.contracts import (AGE_COLUMNS, ATLAS_COLUMNS, PROB_COLUMNS, ContractError, ages_frame, entropy_nats,
                           make_crater_ids, read_ages, read_atlas, sidecar_path, validate_ages, write_ages,
                           write_atlas)
from etl.matching import MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO, has_match, is_match
from etl.moon import MOON_RADIUS_KM

FORMATS = ["gpkg", "parquet", "csv"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_atlas_round_trip_keeps_values_dtypes_and_provenance(tmp_path, fmt):
    prov = atlas_provenance("run-a", source_mosaics=("dom_a.tif", "dem_a.tif"))
    df = synthetic_atlas(300, "run-a", seed=1)
    path = tmp_path / f"atlas.{fmt}"
    written = write_atlas(df, path, prov)
    back, prov_back = read_atlas(path)
    pd.testing.assert_frame_equal(back, written)
    assert list(back.columns) == list(ATLAS_COLUMNS)
    assert {c: str(back[c].dtype) for c in back} == {c: str(pd.Series([], dtype=t).dtype)
                                                     for c, t in ATLAS_COLUMNS.items()}
    assert prov_back == prov
    if fmt == "csv":
        assert json.loads(sidecar_path(path).read_text())["provenance"]["run_name"] == "run-a"


def test_geopackage_has_moon_points(tmp_path):
    import pyogrio

    df = synthetic_atlas(20, "run-g", seed=2)
    path = tmp_path / "a.gpkg"
    write_atlas(df, path, atlas_provenance("run-g"))
    info = pyogrio.read_info(path, layer="atlas")
    assert info["geometry_type"] == "Point"
    assert "104903" in info["crs"]  # ESRI:104903, GCS_Moon_2000
    _, _, geom, _ = pyogrio.raw.read(path, layer="atlas")
    import shapely

    pts = shapely.from_wkb(geom)
    np.testing.assert_array_equal(shapely.get_x(pts), df["lon"])
    np.testing.assert_array_equal(shapely.get_y(pts), df["lat"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_ages_round_trip(tmp_path, fmt):
    ids = synthetic_atlas(100, "run-b", seed=3)["crater_id"]
    ages = synthetic_ages(ids, seed=3)
    prov = age_provenance("ages-b", "run-b")
    path = tmp_path / f"ages.{fmt}"
    written = write_ages(ages, path, prov)
    back, prov_back = read_ages(path)
    pd.testing.assert_frame_equal(back, written)
    assert list(back.columns) == list(AGE_COLUMNS) and prov_back == prov


def test_probability_columns_come_from_the_age_classes():
    assert PROB_COLUMNS == tuple("p_" + c.code.lower() for c in AgeClass)
    assert PROB_COLUMNS == ("p_pnc", "p_nc", "p_ic", "p_ec", "p_cc")


def test_crater_ids_are_stable_and_follow_the_rule():
    lon, lat, d = np.array([10.0, 200.0, -0.0]), np.array([5.0, -45.0, 0.0]), np.array([3.0, 12.5, 1.0])
    ids = make_crater_ids(lon, lat, d, "run")
    assert list(ids) == list(make_crater_ids(lon.copy(), lat.copy(), d.copy(), "run"))
    # 0..360 and -180..180 spell the same crater; sub-rounding noise does not change an id.
    assert make_crater_ids([-160.0], [-45.0], [12.5], "run")[0] == ids[1]
    assert make_crater_ids([10.0 + 1e-9], [5.0], [3.0 + 1e-7], "run")[0] == ids[0]
    assert make_crater_ids([0.0], [0.0], [1.0], "run")[0] == ids[2]  # -0.0 == 0.0
    assert make_crater_ids(lon, lat, d, "other-run")[0] != ids[0]
    assert make_crater_ids([10.00001], [5.0], [3.0], "run")[0] != ids[0]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)  # 16 lowercase hex digits


def test_writer_fills_ids_and_level(tmp_path):
    df = synthetic_atlas(10, "run-c", seed=4).drop(columns=["crater_id", "level"])
    written = write_atlas(df, tmp_path / "a.parquet", atlas_provenance("run-c"))
    assert list(written["crater_id"]) == list(make_crater_ids(df.lon, df.lat, df.diameter_km, "run-c"))
    assert (written["level"] == 1).all()


def test_validation_lists_every_problem_with_file_row_field():
    df = synthetic_atlas(10, "run-d", seed=5)
    df.loc[1, "lat"] = 95.0
    df.loc[4, "lon"] = 400.0
    df.loc[6, "score"] = np.nan
    df.loc[8, "crater_id"] = df.loc[0, "crater_id"]
    df.loc[9, "x1_px"] = df.loc[9, "x0_px"] - 1
    with pytest.raises(ContractError) as err:
        write_atlas(df, "out.csv", atlas_provenance("run-d"))
    got = {(p.file, p.row, p.field) for p in err.value.problems}
    assert got == {("out.csv", 2, "lat"), ("out.csv", 5, "lon"), ("out.csv", 7, "score"),
                   ("out.csv", 9, "crater_id"), ("out.csv", 10, "x1_px")}
    assert "out.csv, row 2, field 'lat': 95.0 is outside [-90, 90]" in str(err.value)



@pytest.mark.parametrize("ids", [
    [f"{i:016x}" for i in range(1000)],                       # 16 bytes: two words each
    [f"id{i % 700:05d}" for i in range(1000)],                 # 7 bytes, repeats from row 701
    ["a", "b", "a", "c", "b"],                                 # 1 byte
    [f"ä{i:03d}" for i in range(50)] + ["ä007"],               # non-ASCII, one byte width
    ["x", "yy", "x", "zzz"],                                   # widths differ: the exact check only
    [f"{i:016x}" for i in range(5)] + ["0000000000000001"],   # the repeat is the last row
])
def test_duplicate_ids_are_flagged_as_pandas_flags_them(ids):
    """The hashed duplicate check (ids of one width) flags exactly the rows pandas' exact check
    flags: every repeat after its first row, whatever the id width."""
    from etl.contracts import _duplicated

    series = pd.Series(ids, dtype="string")
    expected = series.duplicated(keep="first").to_numpy()
    np.testing.assert_array_equal(_duplicated(series), expected)
    assert expected.any() == (len(set(ids)) < len(ids))

def test_missing_columns_and_provenance_are_named():
    df = synthetic_atlas(5, "run-e", seed=6).drop(columns=["score"])
    with pytest.raises(ContractError, match="field 'score': required column is missing"):
        write_atlas(df, "x.gpkg", atlas_provenance("run-e"))
    bad_prov = atlas_provenance("run-e", source_mosaics=())
    with pytest.raises(ContractError, match="provenance.source_mosaics"):
        write_atlas(synthetic_atlas(5, "run-e", seed=6), "x.gpkg", bad_prov)


def test_ages_validation_checks_sums_entropy_class_and_atlas_ids():
    ids = synthetic_atlas(20, "run-f", seed=7)["crater_id"]
    prov = age_provenance("ages-f", "run-f")
    ages = synthetic_ages(ids, seed=7)
    ages.loc[2, "p_nc"] += 0.01
    ages.loc[5, "entropy"] = ages.loc[5, "entropy"] / 2
    ages.loc[7, "age_class"] = "Cretaceous"
    ages.loc[9, "crater_id"] = "not-in-atlas"
    with pytest.raises(ContractError) as err:
        validate_ages(ages, prov, "ages.csv", atlas_ids=ids)
    got = {(p.row, p.field) for p in err.value.problems}
    assert got == {(3, ",".join(PROB_COLUMNS)), (3, "entropy"), (6, "entropy"), (8, "age_class"),
                   (10, "crater_id")}


def test_ages_frame_and_entropy():
    p = np.array([[1, 0, 0, 0, 0], [0.2] * 5, [0.1, 0.1, 0.6, 0.1, 0.1]])
    df = ages_frame(["a", "b", "c"], p)
    assert list(df["age_class"]) == [AGE_CLASS_CODES[0], AGE_CLASS_CODES[0], "Ic"]
    np.testing.assert_allclose(entropy_nats(p), [0.0, np.log(5), -(0.6 * np.log(0.6) + 4 * 0.1 * np.log(0.1))])


def test_match_rule_constants_and_edges():
    assert (MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO) == (0.5, 1.5)
    km_per_deg = np.pi * MOON_RADIUS_KM / 180
    # 10 km and 14 km craters 6.9 km apart match (<= 0.5 * 14), 7.1 km apart do not.
    assert is_match(0, 0, 10.0, 6.9 / km_per_deg, 0, 14.0)
    assert not is_match(0, 0, 10.0, 7.1 / km_per_deg, 0, 14.0)
    # Same centre, diameters 10 and 15 match; 10 and 15.1 do not.
    assert is_match(0, 0, 10.0, 0, 0, 15.0) and not is_match(0, 0, 10.0, 0, 0, 15.1)
    # Across the antimeridian and at the pole.
    assert is_match(179.99, 0, 2.0, -179.99, 0, 2.0)
    assert is_match(0, 90, 2.0, 123, 89.99, 2.0)


def test_has_match_equals_pairwise_rule():
    rng = np.random.default_rng(0)
    a = synthetic_atlas(400, "m", seed=8)
    b = a.sample(250, random_state=0).copy()
    b["lon"] = (b["lon"] + rng.normal(0, 0.05, len(b)) + 180) % 360 - 180
    b["diameter_km"] *= rng.uniform(0.5, 2.0, len(b))
    got = has_match(a.lon, a.lat, a.diameter_km, b.lon, b.lat, b.diameter_km)
    brute = np.array([is_match(lo, la, d, b.lon, b.lat, b.diameter_km).any()
                      for lo, la, d in zip(a.lon, a.lat, a.diameter_km)])
    np.testing.assert_array_equal(got, brute)
    assert 0 < got.sum() < 250


def test_validated_frames_share_no_memory_with_the_input():
    """The validated frame owns its columns: writing to it or to the caller's frame never
    changes the other (a frame built from views of the input would, or would be read-only)."""
    from etl.contracts import validate_atlas

    df = synthetic_atlas(1000, "run-m", seed=9)
    before = df.copy(deep=True)
    out = validate_atlas(df, atlas_provenance("run-m"))
    pd.testing.assert_frame_equal(out, validate_atlas(before, atlas_provenance("run-m")))
    for c in ("lon", "lat", "diameter_km", "score", "x0_px", "level"):
        assert not any(np.may_share_memory(out[c].to_numpy(), df[k].to_numpy()) for k in df.columns if k != "crater_id")
    out.loc[0, ["lat", "score"]] = [1.0, 0.5]
    df.loc[1, "diameter_km"] = 99.0
    assert df.loc[0, "lat"] == before.loc[0, "lat"] and out.loc[1, "diameter_km"] == before.loc[1, "diameter_km"]
    ages = synthetic_ages(df["crater_id"], seed=9)
    got = validate_ages(ages, age_provenance("ages-m", "run-m"))
    assert not any(np.may_share_memory(got[c].to_numpy(), ages[k].to_numpy())
                   for c in PROB_COLUMNS for k in PROB_COLUMNS)
