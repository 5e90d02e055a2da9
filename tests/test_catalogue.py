"""Crater catalogues: CSV / GeoPackage / GeoJSON reading and validation, with errors
that name file, row and column."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyogrio.raw
import pyproj
import pytest
import shapely

from etl.age_classes import AgeClass
from etl.catalogue import CatalogueError, read_catalogue, validate_catalogue
from etl.contracts import ContractError, read_reference
from etl.geometry import mercator_crs
from etl.moon import MOON_RADIUS_M

GOOD = """lon,lat,diameter_km,name
10.5,-20.25,12.0,Alpha
350.0,45.0,3.5,Beta
-120.0,89.0,100.0,Gamma
"""


def _csv(tmp_path, text, name="craters.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_csv_normalises_longitudes_and_keeps_other_columns(tmp_path):
    df = read_catalogue(_csv(tmp_path, GOOD))
    assert list(df.columns) == ["lon", "lat", "diameter_km", "name"]
    np.testing.assert_allclose(df.lon, [10.5, -10.0, -120.0])  # 350 -> -10
    np.testing.assert_allclose(df.lat, [-20.25, 45.0, 89.0])
    assert df.name.tolist() == ["Alpha", "Beta", "Gamma"]


def test_configurable_columns_units_and_age_classes(tmp_path):
    text = "x;y;diam_m;system\n0;0;1500;Copernican\n90;10;20000;Ic\n180;-10;5000;pre-Nectarian System\n270;5;800;2\n"
    df = read_catalogue(_csv(tmp_path, text), lon_col="x", lat_col="y", diameter_col="diam_m",
                        diameter_unit="m", age_col="system")
    assert list(df.columns) == ["lon", "lat", "diameter_km", "age_class"]
    np.testing.assert_allclose(df.diameter_km, [1.5, 20.0, 5.0, 0.8])
    np.testing.assert_allclose(df.lon, [0.0, 90.0, -180.0, -90.0])
    assert df.age_class.tolist() == [AgeClass.COPERNICAN, AgeClass.IMBRIAN, AgeClass.PRE_NECTARIAN, AgeClass.IMBRIAN]
    assert df.age_class.dtype == np.int64


def _where(exc_info):
    """(file name, row, field) of every problem a CatalogueError lists."""
    return [(Path(p.file).name, p.row, p.field) for p in exc_info.value.problems]


@pytest.mark.parametrize("row, column, message", [
    ("1.0,nan,5.0", "lat", "nan is not a finite number"),
    ("1.0,95,5.0", "lat", r"95.0 is outside \[-90, 90\] degrees"),
    ("1.0,5.0,-3", "diameter_km", "-3.0 is not positive"),
    ("1.0,5.0,0", "diameter_km", "0.0 is not positive"),
    ("abc,5.0,2.0", "lon", "'abc' is not a number"),
    ("400,5.0,2.0", "lon", r"400.0 is outside \[-180, 360\] degrees"),
    ("1.0,5.0,", "diameter_km", "is missing"),
])
def test_bad_values_name_file_row_and_field(tmp_path, row, column, message):
    # Blank and quoted multi-line rows before the bad one must not shift its row number.
    text = 'lon,lat,diameter_km,note\n0,0,1,"a\nmultiline note"\n\n10,10,2,ok\n' + row + ",bad\n"
    with pytest.raises(CatalogueError, match=rf"bad\.csv, row 3, field '{column}': {message}") as exc:
        read_catalogue(_csv(tmp_path, text, "bad.csv"))
    assert _where(exc) == [("bad.csv", 3, column)]
    assert isinstance(exc.value, ContractError)  # one error style with the file contracts


def test_every_problem_is_listed(tmp_path):
    text = "lon,lat,diameter_km\n1,1,1\nabc,95,0\n3,3,3\n400,-91,\n"
    with pytest.raises(CatalogueError, match=r"^6 problem\(s\)") as exc:
        read_catalogue(_csv(tmp_path, text, "many.csv"))
    assert set(_where(exc)) == {("many.csv", r, f) for r in (2, 4) for f in ("lon", "lat", "diameter_km")}


def test_missing_column_lists_available_ones(tmp_path):
    with pytest.raises(CatalogueError, match=r"cat\.csv, field 'diameter_km': required column is missing "
                                             r"\(available columns: 'lon', 'lat', 'diam'\)"):
        read_catalogue(_csv(tmp_path, "lon,lat,diam\n1,2,3\n", "cat.csv"))
    with pytest.raises(CatalogueError, match=r"field 'age': required column is missing"):
        read_catalogue(_csv(tmp_path, GOOD), age_col="age")


def test_bad_age_class_and_ragged_rows(tmp_path):
    with pytest.raises(CatalogueError, match=r"ages\.csv, row 2, field 'age': 'Jurassic' is not a lunar age class"):
        read_catalogue(_csv(tmp_path, "lon,lat,diameter_km,age\n1,1,1,Ec\n5,5,5,Jurassic\n", "ages.csv"),
                       age_col="age")
    with pytest.raises(CatalogueError, match=r"ragged\.csv, row 2: has 4 fields, the header has 3") as exc:
        read_catalogue(_csv(tmp_path, "lon,lat,diameter_km\n1,1,1\n2,2,2,2\n3,3\n", "ragged.csv"))
    assert _where(exc) == [("ragged.csv", 2, None), ("ragged.csv", 3, None)]
    with pytest.raises(CatalogueError, match=r"nope\.csv: no such catalogue file"):
        read_catalogue(tmp_path / "nope.csv")


def test_own_age_column_is_read_as_ages(tmp_path):
    df = read_catalogue(_csv(tmp_path, "lon,lat,diameter_km,age_class\n1,1,1,Ec\n5,5,5,pNc\n"))
    assert df.age_class.tolist() == [AgeClass.ERATOSTHENIAN, AgeClass.PRE_NECTARIAN]


def test_ids_are_text_and_checked(tmp_path):
    df = read_catalogue(_csv(tmp_path, "id,lon,lat,diameter_km\nNA,1,1,1\n007,5,5,5\n"), id_col="id")
    assert df["id"].tolist() == ["NA", "007"]  # not missing, not the number 7
    with pytest.raises(CatalogueError, match=r"ids\.csv, row 2, field 'id': 'a' repeats an earlier row"):
        read_catalogue(_csv(tmp_path, "id,lon,lat,diameter_km\na,1,1,1\na,5,5,5\n", "ids.csv"), id_col="id")


def test_duplicates_error_names_both_rows_or_are_dropped(tmp_path):
    # Row 3 repeats row 1 across the antimeridian (0.4 km apart, 2 % larger): the same crater.
    shift_deg = math.degrees(400.0 / MOON_RADIUS_M)
    text = (f"lon,lat,diameter_km\n179.9999,0,20.0\n10,10,20.0\n{-180 + shift_deg - 0.0001:.6f},0,20.4\n"
            "10.0,10.0,30.0\n")  # row 4: same centre as row 2 but a different size: not a duplicate
    path = _csv(tmp_path, text, "dups.csv")
    with pytest.raises(CatalogueError, match=r"dups\.csv, row 3, field 'lon,lat,diameter_km': the same crater as "
                                             r"row 1 \(centres 0\.4 km apart") as exc:
        read_catalogue(path)
    assert [w for w in _where(exc) if w[1] is not None] == [("dups.csv", 3, "lon,lat,diameter_km")]
    with pytest.warns(UserWarning, match="dropped 1 duplicate crater"):
        df = read_catalogue(path, on_duplicate="drop")
    np.testing.assert_allclose(df.diameter_km, [20.0, 20.0, 30.0])
    assert len(read_catalogue(path, on_duplicate="keep")) == 4


def test_on_invalid_drop_keeps_the_good_rows(tmp_path):
    text = "lon,lat,diameter_km\n1,1,1\n2,95,2\n3,3,0\n4,4,4\n"
    with pytest.warns(UserWarning) as record:
        df = read_catalogue(_csv(tmp_path, text), on_invalid="drop")
    assert len(record) == 1
    message = str(record[0].message)
    assert "dropped 2 invalid row(s)" in message
    assert "row 2, field 'lat': 95.0 is outside" in message and "row 3, field 'diameter_km': 0.0 is not" in message
    np.testing.assert_allclose(df.lon, [1.0, 4.0])


def test_validate_in_memory_frame_counts_rows_from_one():
    frame = pd.DataFrame({"lon": [1.0, 2.0], "lat": [0.0, -91.0], "diameter_km": [1.0, 1.0]}, index=[7, 8])
    with pytest.raises(CatalogueError, match=r"catalogue, row 2, field 'lat': -91.0 is outside"):
        validate_catalogue(frame)
    ok = validate_catalogue(frame.iloc[:1], source="mem")
    assert ok.index.tolist() == [0] and ok.lon.tolist() == [1.0]


def test_reference_catalogues_use_the_same_reader(tmp_path):
    path = _csv(tmp_path, "ref_id,lon,lat,diameter_km\nNA,350,1,2\nb,5,95,0\n", "ref.csv")
    with pytest.raises(CatalogueError) as exc:
        read_reference(path, "robbins")
    assert _where(exc) == [("ref.csv", 2, "lat"), ("ref.csv", 2, "diameter_km")]
    ref = read_reference(_csv(tmp_path, "ref_id,lon,lat,diameter_km\nNA,350,1,2\n"), "robbins")
    assert ref["ref_id"].tolist() == ["NA"] and ref["lon"].tolist() == [-10.0]


def test_geopackage_and_geojson_points(tmp_path):
    lon, lat = np.array([10.0, 200.0, -45.0]), np.array([5.0, -30.0, 80.0])
    fields = [np.array([3.0, 4.0, 5.0]), np.array(["Cc", "Ec", "Ic"], dtype=object)]
    gpkg = tmp_path / "craters.gpkg"
    pyogrio.raw.write(gpkg, shapely.to_wkb(shapely.points(lon, lat)), fields, ["diameter_km", "age"],
                      geometry_type="Point", crs="IAU_2015:30100", layer="craters", driver="GPKG")
    df = read_catalogue(gpkg, layer="craters", age_col="age")
    np.testing.assert_allclose(df.lon, [10.0, -160.0, -45.0])
    np.testing.assert_allclose(df.lat, lat)
    assert df.age_class.tolist() == [4, 3, 2]
    # GeoJSON (always WGS84 lon/lat by spec: read as lunar degrees), with a bad feature.
    geojson = tmp_path / "craters.geojson"
    pyogrio.raw.write(geojson, shapely.to_wkb(shapely.points(lon, lat)), [np.array([3.0, -1.0, 5.0])],
                      ["diameter_km"], geometry_type="Point", crs="OGC:CRS84", driver="GeoJSON")
    with pytest.raises(CatalogueError, match=r"craters\.geojson, row 2, field 'diameter_km': -1\.0 is not positive"):
        read_catalogue(geojson)
    # A projected lunar layer is unprojected to lon/lat.
    merc = mercator_crs()
    fwd = pyproj.Transformer.from_crs("IAU_2015:30100", pyproj.CRS(merc.to_wkt()), always_xy=True)
    x, y = fwd.transform(lon, lat)
    projected = tmp_path / "projected.gpkg"
    pyogrio.raw.write(projected, shapely.to_wkb(shapely.points(x, y)), fields[:1], ["diameter_km"],
                      geometry_type="Point", crs=merc.to_wkt(), driver="GPKG")
    df = read_catalogue(projected)
    np.testing.assert_allclose(df.lon, [10.0, -160.0, -45.0], atol=1e-9)
    np.testing.assert_allclose(df.lat, lat, atol=1e-9)


def _count_rows(path, keep=lambda row: True):
    with open(path, newline="") as f:
        return sum(1 for row in csv.DictReader(f) if keep(row))


def test_real_catalogues(shared_data):
    head = shared_data / "catalogues" / "head2010_west.csv"
    df = read_catalogue(head)
    assert len(df) == _count_rows(head) > 2000
    assert df.lon.between(-180, 0).all() and df.lat.between(-90, 90).all()
    assert df.diameter_km.min() >= 20.0  # complete down to 20 km by construction
    iau = shared_data / "catalogues" / "iau_named_craters.csv"
    # The gazetteer lists unmeasured (bracketed, dropped) names with diameter 0.
    with pytest.raises(CatalogueError, match=r"iau_named_craters\.csv, row \d+, field 'diameter_km': 0\.0 is not "):
        read_catalogue(iau)
    with pytest.warns(UserWarning):
        named = read_catalogue(iau, on_invalid="drop", on_duplicate="drop")
    measured = _count_rows(iau, lambda row: float(row["diameter_km"]) > 0)
    # One renamed crater is listed twice (Natasha, formerly [Vinogradov]): the first is kept.
    assert measured - 3 <= len(named) < measured
    assert "Natasha" in set(named.name) and "[Vinogradov]" not in set(named.name)
    assert named.lon.between(-180, 180).all() and named.diameter_km.gt(0).all()
    assert named.lon.min() < -170 and named.lon.max() > 170  # both hemispheres
    assert "name" in named.columns


def test_unlabelled_rows_are_allowed_only_when_asked(tmp_path):
    """Training tables mix dated and undated craters: with ``allow_unlabelled`` an empty age is class -1;
    without it, it is a problem; a present age that does not parse is a problem either way."""
    path = _csv(tmp_path, "lon,lat,diameter_km,age_class\n10,20,5,Cc\n11,21,6,\n12,22,7,pNc\n")
    df = read_catalogue(path, allow_unlabelled=True)
    assert df.age_class.tolist() == [int(AgeClass.COPERNICAN), -1, int(AgeClass.PRE_NECTARIAN)]
    with pytest.raises(CatalogueError) as exc:
        read_catalogue(path)
    assert "row 2" in str(exc.value) and "age_class" in str(exc.value)
    bad = _csv(tmp_path, "lon,lat,diameter_km,age_class\n10,20,5,Cc\n11,21,6,Jurassic\n", "bad.csv")
    with pytest.raises(CatalogueError, match="Jurassic"):
        read_catalogue(bad, allow_unlabelled=True)
    frame = pd.DataFrame({"lon": [1.0, 2.0], "lat": [0.0, 0.0], "diameter_km": [3.0, 4.0], "age_class": [None, "Ic"]})
    assert validate_catalogue(frame, allow_unlabelled=True).age_class.tolist() == [-1, int(AgeClass.IMBRIAN)]
