"""Bad input gets a clear error and writes nothing; nothing gives a silent wrong result
(issue 9, "Bad input"). Each test names the item it covers."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
import uuid

import numpy as np
import pandas as pd
import pytest
import shapely
from sqlalchemy import text
from sqlalchemy.engine import make_url

from atlas_db import queries as Q
from atlas_db.synthetic import age_provenance, atlas_provenance, synthetic_ages, synthetic_atlas
from etl.cli import main as cli_main
from etl.contracts import (ATLAS_COLUMNS, MAX_LEVEL, ContractError, _metadata_json, read_ages, read_atlas,
                           read_reference, validate_atlas, write_ages, write_atlas)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _stored_craters(engine, run: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM crater_atlas WHERE run_name = :r"), {"r": run}).scalar()


def _run_exists(engine, run: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM detection_runs WHERE run_name = :r"), {"r": run}).scalar() == 1


# --------------------------------------------------------------------------- 6: ids that look missing

LOOKS_MISSING = ["NA", "NULL", "nan", "None", "N/A", "null", "NaN", "#N/A"]


def test_csv_ids_that_look_missing_read_back_as_written(tmp_path):
    """Item 6: CSV ids such as NA, NULL and nan are ids, not missing values: an atlas and an
    age table the project wrote itself read back unchanged."""
    df = synthetic_atlas(30, "run-na", seed=3)
    df.loc[:len(LOOKS_MISSING) - 1, "crater_id"] = LOOKS_MISSING
    path = tmp_path / "atlas.csv"
    written = write_atlas(df, path, atlas_provenance("run-na"))
    back, _ = read_atlas(path)
    pd.testing.assert_frame_equal(back, written)
    assert list(back["crater_id"][:len(LOOKS_MISSING)]) == LOOKS_MISSING

    ages = synthetic_ages(df["crater_id"], seed=3)
    ages_path = tmp_path / "ages.csv"
    written_ages = write_ages(ages, ages_path, age_provenance("ages-na", "run-na"))
    back_ages, _ = read_ages(ages_path, atlas_ids=df["crater_id"])
    pd.testing.assert_frame_equal(back_ages, written_ages)

    ref = tmp_path / "ref.csv"
    pd.DataFrame({"ref_id": LOOKS_MISSING, "lon": np.arange(8.0), "lat": np.zeros(8),
                  "diameter_km": np.ones(8)}).to_csv(ref, index=False)
    assert list(read_reference(ref, "ref-na")["ref_id"]) == LOOKS_MISSING


def test_csv_missing_numbers_are_still_missing(tmp_path):
    """The other side of item 6: an empty numeric cell is still reported as missing."""
    df = synthetic_atlas(10, "run-gap", seed=4)
    path = tmp_path / "atlas.csv"
    write_atlas(df, path, atlas_provenance("run-gap"))
    raw = path.read_text().splitlines()
    cells = raw[3].split(",")
    cells[list(ATLAS_COLUMNS).index("score")] = ""
    raw[3] = ",".join(cells)
    path.write_text("\n".join(raw) + "\n")
    with pytest.raises(ContractError) as err:
        read_atlas(path)
    assert [(p.row, p.field) for p in err.value.problems] == [(3, "score")]
    assert "not a finite number" in str(err.value)


# --------------------------------------------------------------------------- 9: one report per cell


def test_a_string_in_a_numeric_cell_is_reported_once():
    """Item 9: 'abc' in a numeric column is one problem ("not a number"), not two."""
    df = synthetic_atlas(5, "run-abc", seed=5).astype({"diameter_km": object})
    df.loc[2, "diameter_km"] = "abc"
    with pytest.raises(ContractError) as err:
        validate_atlas(df, atlas_provenance("run-abc"), "a.csv")
    assert [(p.row, p.field, p.message) for p in err.value.problems] == [(3, "diameter_km", "'abc' is not a number")]


# --------------------------------------------------------------------------- 5: values COPY would refuse


def test_level_past_int32_and_nul_in_ids_are_contract_problems():
    """Item 5: both used to pass validation and fail inside COPY with a traceback."""
    df = synthetic_atlas(6, "run-big", seed=6).astype({"level": "int64"})  # as a file may hold it
    df.loc[1, "level"] = MAX_LEVEL + 1
    df.loc[4, "crater_id"] = "abc\x00def"
    with pytest.raises(ContractError) as err:
        validate_atlas(df, atlas_provenance("run-big"), "a.parquet")
    assert {(p.row, p.field) for p in err.value.problems} == {(2, "level"), (5, "crater_id")}
    assert "2147483648 is larger than 2147483647" in str(err.value) and "NUL" in str(err.value)
    ok = synthetic_atlas(6, "run-big", seed=6)
    ok.loc[1, "level"] = MAX_LEVEL  # the largest level the database holds is fine
    assert validate_atlas(ok, atlas_provenance("run-big"))["level"][1] == MAX_LEVEL
    with pytest.raises(ContractError, match="provenance.model.*NUL"):
        validate_atlas(ok, atlas_provenance("run-big", model="r-fcn\x00"))


@pytest.mark.db
def test_level_past_int32_and_nul_id_are_refused_before_the_database(atlas_url, atlas_engine, tmp_path):
    """Item 5 through the command: exit 1, file/row/field named, nothing written."""
    from etl.load import load_atlas_frame

    run = _name("big-level")
    df = synthetic_atlas(20, run, seed=7).astype({"level": "int64"})
    df.loc[3, "level"] = 2**31
    with pytest.raises(ContractError, match="row 4, field 'level'"):
        load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    path = tmp_path / "nul.parquet"
    df = synthetic_atlas(20, run, seed=7)
    df.loc[5, "crater_id"] = "x\x00y"
    df.to_parquet(path)  # written around the validating writer, as another tool might
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    table = table.replace_schema_metadata({b"deepcraters": _metadata_json("atlas", atlas_provenance(run)).encode()})
    pq.write_table(table, path)
    assert cli_main(["load", "atlas", str(path), "--db", atlas_url, "--quiet"]) == 1
    assert not _run_exists(atlas_engine, run)


# --------------------------------------------------------------------------- 2: GeoPackage CRS and geometry


def _raw_gpkg(path, df, run, crs, lon_shift=None):
    """An atlas GeoPackage written around ``write_atlas`` (as another tool might), in ``crs``,
    with each point's lon moved by ``lon_shift`` (degrees per row)."""
    from pyogrio.raw import write

    fields = list(df.columns)
    data = [df[c].to_numpy(dtype=object) if df[c].dtype == "string" else df[c].to_numpy() for c in fields]
    lon = df["lon"].to_numpy() + (0.0 if lon_shift is None else lon_shift)
    geom = shapely.to_wkb(shapely.points(lon, df["lat"].to_numpy()))
    write(str(path), geom, data, fields, layer="atlas", driver="GPKG", geometry_type="Point", crs=crs,
          layer_metadata={"deepcraters": _metadata_json("atlas", atlas_provenance(run))})


def test_geopackage_in_an_earth_crs_is_refused(tmp_path):
    """Item 2: a layer in EPSG:4326 holds Earth coordinates; the atlas contract is the Moon's."""
    df = synthetic_atlas(10, "run-earth", seed=8)
    path = tmp_path / "earth.gpkg"
    _raw_gpkg(path, df, "run-earth", "EPSG:4326")
    with pytest.raises(ContractError) as err:
        read_atlas(path)
    (problem,) = err.value.problems
    assert (problem.row, problem.field) == (None, "crs") and "EPSG:4326" in problem.message
    lunar = tmp_path / "moon.gpkg"
    _raw_gpkg(lunar, df, "run-earth", "IAU_2015:30100")  # another name for the Moon's sphere is fine
    assert len(read_atlas(lunar)[0]) == 10


def test_geopackage_points_must_agree_with_lon_lat(tmp_path):
    """Item 2: a point that is not where its row's lon/lat say is a problem of that row."""
    df = synthetic_atlas(10, "run-off", seed=9)
    shift = np.zeros(len(df))
    shift[[2, 7]] = [0.5, 1e-3]  # 15 km and 30 m away on the Moon
    path = tmp_path / "off.gpkg"
    _raw_gpkg(path, df, "run-off", "ESRI:104903", shift)
    with pytest.raises(ContractError) as err:
        read_atlas(path)
    assert [(p.row, p.field) for p in err.value.problems] == [(3, "geometry"), (8, "geometry")]
    near = tmp_path / "near.gpkg"
    df.loc[4, "lon"] = -180.0
    shift[:] = 0.0
    shift[4] = 360.0  # a point at 180 is where the row's -180 says
    _raw_gpkg(near, df, "run-off", "ESRI:104903", shift)
    assert len(read_atlas(near)[0]) == 10


@pytest.mark.db
def test_load_of_an_earth_geopackage_writes_nothing(atlas_url, atlas_engine, tmp_path, capsys):
    run = _name("earth")
    path = tmp_path / "earth.gpkg"
    _raw_gpkg(path, synthetic_atlas(10, run, seed=10), run, "EPSG:4326")
    assert cli_main(["load", "atlas", str(path), "--db", atlas_url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "field 'crs'" in err and "nothing written" in err and "Traceback" not in err
    assert not _run_exists(atlas_engine, run)


# --------------------------------------------------------------------------- 4: an edge at 180


@pytest.fixture(scope="module")
def edge_run(atlas_engine):
    """Craters on the antimeridian (stored at -180), just either side of it, and far away."""
    from etl.load import load_atlas_frame

    run = _name("edge180")
    cat = pd.DataFrame({"lon": [-180.0, -180.0, 179.5, -179.5, 170.0, 0.0],
                        "lat": [0.0, 9.0, 1.0, 2.0, -10.0, 0.0],
                        "diameter_km": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    atlas = synthetic_atlas(len(cat), run, seed=12, catalogue=cat)
    load_atlas_frame(atlas, atlas_provenance(run), engine=atlas_engine)
    return run, atlas.set_index("crater_id")


@pytest.mark.db
@pytest.mark.parametrize("region", ["box", "wkt", "geojson"])
def test_region_edge_at_180_covers_craters_stored_at_minus_180(atlas_engine, edge_run, region):
    """Item 4: lon -180 and 180 are one meridian and boundaries count as inside."""
    import json

    run, atlas = edge_run
    wkt = "POLYGON((170 -10, 180 -10, 180 10, 170 10, 170 -10))"
    with atlas_engine.connect() as conn:
        if region == "box":
            got = Q.craters_in_box(conn, 170, -10, 180, 10, run=run)
        elif region == "wkt":
            got = Q.craters_in_polygon(conn, wkt, run=run)
        else:
            got = Q.craters_in_polygon(conn, json.dumps(shapely.geometry.mapping(shapely.from_wkt(wkt))), run=run)
        sfd = Q.size_frequency(conn, wkt, diameters_km=[0.5], run=run)
        west = Q.craters_in_box(conn, -180, -10, -170, 10, run=run)
    expected = {(-180.0, 0.0), (-180.0, 9.0), (179.5, 1.0), (170.0, -10.0)}
    assert set(zip(got["lon"], got["lat"])) == expected
    assert sfd["n_cumulative"].tolist() == [len(expected)]
    assert set(zip(west["lon"], west["lat"])) == {(-180.0, 0.0), (-180.0, 9.0), (-179.5, 2.0)}


@pytest.mark.db
def test_region_area_is_unchanged_by_the_antimeridian_fix(atlas_engine):
    """The cut that keeps -180 inside adds nothing measurable to an area (a 10 x 20 degree box)."""
    with atlas_engine.connect() as conn:
        east = Q.region_area_km2(conn, Q.box_wkt(170, -10, 180, 10))
        west = Q.region_area_km2(conn, Q.box_wkt(-180, -10, -170, 10))
        middle = Q.region_area_km2(conn, Q.box_wkt(0, -10, 10, 10))
    assert east == pytest.approx(middle, rel=1e-9) and west == pytest.approx(middle, rel=1e-9)


# --------------------------------------------------------------------------- 7: query input messages


def test_unclosed_wkt_ring_is_a_value_error_not_a_geos_traceback():
    with pytest.raises(ValueError, match="closed linestring"):
        Q.region_wkt("POLYGON((0 0, 10 0, 10 10, 0 10))")
    with pytest.raises(ValueError, match="not a readable polygon"):
        Q.region_wkt("POLYGON((0 0, 10 0")


@pytest.mark.db
def test_query_cli_refuses_unclosed_ring_and_huge_k_with_one_line(atlas_url, capsys):
    """Item 7: exit 2 and a message, no traceback (k is an int4 in SQL)."""
    assert cli_main(["query", "polygon", "--wkt", "POLYGON((0 0, 10 0, 10 10, 0 10))", "--db", atlas_url]) == 2
    err = capsys.readouterr().err
    assert "closed linestring" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert cli_main(["query", "nearest", "--lon", "0", "--lat", "0", "-k", "3000000000", "--db", atlas_url]) == 2
    err = capsys.readouterr().err
    assert "k must be between 1 and 2147483647" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 8: the read-only role


def _scram_matches(verifier: str, password: str) -> bool:
    """Whether a stored SCRAM-SHA-256 verifier (RFC 5802/7677, PostgreSQL's format
    ``SCRAM-SHA-256$iter:salt$StoredKey:ServerKey``) was made from ``password``."""
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (method == "SCRAM-SHA-256" and hashlib.sha256(client_key).digest() == stored_key
            and hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key)


@pytest.mark.db
def test_reader_role_password_travels_as_a_scram_verifier(atlas_url):
    """Item 8: no statement sent to the server holds the password (a server with
    log_statement = ddl logs statements); the stored verifier is made from it."""
    from psycopg2.extras import LoggingConnection

    from atlas_db.engine import get_engine
    from atlas_db.views import ensure_reader_role

    role, password = f"dc_scram_{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    sent = io.StringIO()  # every statement the client sends, as sent

    class Recording(LoggingConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.initialize(sent)

    engine = get_engine(atlas_url, connect_args={"connection_factory": Recording})
    try:
        with engine.begin() as conn:
            ensure_reader_role(conn, role, password)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}).scalar()
        assert "ALTER ROLE" in sent.getvalue() and password not in sent.getvalue()
        assert stored.startswith("SCRAM-SHA-256$") and _scram_matches(stored, password)
        assert not _scram_matches(stored, password + "x")
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{role}"')
        engine.dispose()


@pytest.mark.db
def test_reader_role_cannot_create_temporary_tables_or_functions(atlas_url, atlas_engine):
    """Item 8: PUBLIC's TEMPORARY on the atlas database is gone, so the reader can create
    neither temporary tables nor functions, even in a read-write session (read-only is only
    its default, and read-only transactions allow temporary tables anyway)."""
    from sqlalchemy.exc import DBAPIError

    from atlas_db.engine import get_engine
    from atlas_db.views import ensure_reader_role

    role = f"dc_notemp_{uuid.uuid4().hex[:8]}"
    with atlas_engine.begin() as conn:
        ensure_reader_role(conn, role)
    engine = get_engine(make_url(atlas_url).set(username=role, password=None).render_as_string(hide_password=False))
    try:
        with engine.connect() as conn:
            may = conn.execute(text("SELECT has_database_privilege(current_database(), 'TEMPORARY'), "
                                    "has_schema_privilege('public', 'CREATE')")).one()
            assert tuple(may) == (False, False)
            conn.execute(text("SELECT * FROM crater_atlas LIMIT 1")).all()  # still reads the views (raises if not)
        for stmt in ("CREATE TEMP TABLE scratch (x int)",
                     "CREATE FUNCTION pg_temp.evil() RETURNS int LANGUAGE sql AS 'SELECT 1'"):
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("SET default_transaction_read_only = off")
                with pytest.raises(DBAPIError) as err:
                    conn.execute(text(stmt))
                assert err.value.orig.pgcode == "42501", stmt  # insufficient privilege
    finally:
        engine.dispose()
        with atlas_engine.begin() as conn:
            conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
            conn.exec_driver_sql(f'DROP ROLE "{role}"')


# --------------------------------------------------------------------------- 3: a load that would wipe a run


@pytest.fixture
def stored_run(atlas_engine, tmp_path):
    """An atlas run of 300 craters with an age run over it, and the atlas as a CSV file."""
    from etl.load import load_ages_frame, load_atlas_frame

    run = _name("wipe")
    df = synthetic_atlas(300, run, seed=13)
    path = tmp_path / "atlas.csv"
    write_atlas(df, path, atlas_provenance(run))
    load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    load_ages_frame(synthetic_ages(df["crater_id"], seed=13), age_provenance(f"{run}-ages", run), engine=atlas_engine)
    return run, df, path


def _ages_stored(engine, age_run: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT n_estimates FROM age_run_info WHERE run_name = :r"), {"r": age_run}).scalar()


@pytest.mark.db
def test_header_only_or_truncated_file_does_not_wipe_a_run(atlas_url, atlas_engine, stored_run, tmp_path, capsys):
    """Item 3: deleting most of a stored run (and its ages by cascade) needs --replace."""
    run, df, path = stored_run
    lines = path.read_text().splitlines(keepends=True)
    header_only, truncated = tmp_path / "header.csv", tmp_path / "cut.csv"
    header_only.write_text(lines[0])
    truncated.write_text("".join(lines[:101]))  # header + 100 of 300 rows: a copy cut short
    for cut in (header_only, truncated):
        (tmp_path / f"{cut.name}.provenance.json").write_text(
            (tmp_path / "atlas.csv.provenance.json").read_text())
        assert cli_main(["load", "atlas", str(cut), "--db", atlas_url, "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "--replace" in err and "Nothing written" in err and "Traceback" not in err
        assert _stored_craters(atlas_engine, run) == 300 and _ages_stored(atlas_engine, f"{run}-ages") == 300
    assert cli_main(["load", "atlas", str(truncated), "--db", atlas_url, "--quiet", "--replace"]) == 0
    assert "100 unchanged, 200 deleted" in capsys.readouterr().out
    assert _stored_craters(atlas_engine, run) == 100 and _ages_stored(atlas_engine, f"{run}-ages") == 100


@pytest.mark.db
def test_a_load_that_deletes_less_than_half_needs_no_flag(atlas_engine, stored_run):
    from etl.load import load_atlas_frame

    run, df, _ = stored_run
    res = load_atlas_frame(df.iloc[:150], atlas_provenance(run), engine=atlas_engine)  # exactly half goes
    assert (res.inserted, res.updated, res.deleted) == (0, 0, 150)


# --------------------------------------------------------------------------- 9: provenance in the summary


@pytest.mark.db
def test_summary_says_when_a_load_rewrote_the_run_provenance(atlas_url, atlas_engine, stored_run, tmp_path, capsys):
    """Item 9: a reload that changes only the provenance said '0 updated' and nothing else."""
    run, df, _ = stored_run
    path = tmp_path / "v2.parquet"
    write_atlas(df, path, atlas_provenance(run, model="rfcn_R_101_C4"))
    assert cli_main(["load", "atlas", str(path), "--db", atlas_url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "0 updated" in out and "provenance updated" in out
    with atlas_engine.connect() as conn:
        assert conn.execute(text("SELECT model FROM detection_run_info WHERE run_name = :r"), {"r": run}).scalar() \
            == "rfcn_R_101_C4"
    assert cli_main(["load", "atlas", str(path), "--db", atlas_url, "--quiet"]) == 0
    assert "provenance updated" not in capsys.readouterr().out  # nothing changed the second time


# --------------------------------------------------------------------------- 7: database failures in load, db roles

NO_SERVER = "postgresql://postgres@localhost:1/deepcraters"  # nothing listens on port 1


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    (line,) = err.strip().splitlines()
    return line


@pytest.mark.db
def test_no_server_is_one_line_and_exit_1(stored_run, capsys):
    _, _, path = stored_run
    assert cli_main(["load", "atlas", str(path), "--db", NO_SERVER, "--quiet"]) == 1
    assert "not loaded, nothing written: database error at" in _one_line(capsys.readouterr().err)
    assert cli_main(["db", "roles", "--db", NO_SERVER]) == 1
    assert "Connection refused" in _one_line(capsys.readouterr().err)


# What libpq says when the server process of a connection is gone (its words depend on timing).
_KILLED = re.compile(r"database error at \S+: (terminating connection|server closed the connection)")


def _terminate(atlas_engine, conn) -> None:
    """Kill the server process behind ``conn`` (as an administrator or a crash would), and wait for it."""
    pid = conn.connection.dbapi_connection.get_backend_pid()
    with atlas_engine.connect() as admin:
        assert admin.execute(text("SELECT pg_terminate_backend(:p, 10000)"), {"p": pid}).scalar()


@pytest.mark.db
def test_killed_backend_during_load_is_one_line_and_writes_nothing(atlas_url, atlas_engine, tmp_path, capsys,
                                                                   monkeypatch):
    import atlas_db.bulk as B

    run = _name("killed")
    path = tmp_path / "atlas.parquet"
    write_atlas(synthetic_atlas(200, run, seed=14), path, atlas_provenance(run))
    monkeypatch.setattr(B, "_before_commit", lambda conn, result: _terminate(atlas_engine, conn))
    assert cli_main(["load", "atlas", str(path), "--db", atlas_url, "--quiet"]) == 1
    assert _KILLED.search(_one_line(capsys.readouterr().err))
    assert not _run_exists(atlas_engine, run)


@pytest.mark.db
def test_killed_backend_during_db_roles_is_one_line_and_creates_no_role(atlas_url, atlas_engine, capsys,
                                                                        monkeypatch):
    import atlas_db.views as V

    real = V.ensure_reader_role

    def then_killed(conn, role, password=None):
        real(conn, role, password)
        _terminate(atlas_engine, conn)

    monkeypatch.setattr(V, "ensure_reader_role", then_killed)
    role = f"dc_killed_{uuid.uuid4().hex[:8]}"
    assert cli_main(["db", "roles", "--db", atlas_url, "--reader", role]) == 1
    assert _KILLED.search(_one_line(capsys.readouterr().err))
    with atlas_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar() == 0
