"""Schema, migrations, the read-only role and the ``query`` / ``db`` commands on the real server."""
from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from atlas_db import queries as Q
from atlas_db.engine import get_engine
from atlas_db.migrate import upgrade
from atlas_db.models import Base
from atlas_db.synthetic import atlas_provenance, synthetic_atlas, synthetic_catalogue
from atlas_db.views import VIEWS, ensure_reader_role
from etl.commands.db import main as db_main
from etl.commands.query import main as query_main
from etl.load import load_atlas_frame
from etl.moon import MOON_SRID


def test_upgrade_is_idempotent_and_at_head(atlas_url):
    from alembic.script import ScriptDirectory

    from atlas_db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head == "0005" and upgrade(atlas_url) == upgrade(atlas_url) == head


def test_migrations_match_the_models(atlas_engine):
    """Autogenerate finds nothing to do: the shipped migration builds exactly the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from geoalchemy2 import alembic_helpers

    with atlas_engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": alembic_helpers.include_object,
                                                     "compare_type": True})
        diff = [d for d in compare_metadata(ctx, Base.metadata) if not _is_foreign(d)]
    diff = [d for d in diff if not (isinstance(d, list) and all(_same_geometry(x) for x in d))]
    assert diff == []


def _same_geometry(change) -> bool:
    """GeoAlchemy2 reflects SRID 0 ("none", as PostGIS stores it) as -1 ("none", its default)."""
    if change[0] != "modify_type":
        return False
    old, new = change[5], change[6]
    return (getattr(old, "geometry_type", None) == getattr(new, "geometry_type", "?")
            and old.dimension == new.dimension and {old.srid, new.srid} <= {0, -1})


def _is_foreign(d) -> bool:
    """Tables in the shared test database that belong to other modules of the project."""
    if isinstance(d, tuple) and d[0] == "remove_table":
        return d[1].name not in Base.metadata.tables
    if isinstance(d, tuple) and d[0] == "remove_index":
        return d[1].table.name not in Base.metadata.tables
    return False


@pytest.fixture
def scratch_url(database_url):
    """A database of its own on the test server (migrations up and down must not touch the
    shared one), dropped afterwards."""
    from sqlalchemy import create_engine

    url = make_url(database_url).set(database=f"{make_url(database_url).database}_migrate_{uuid.uuid4().hex[:8]}")
    yield url.render_as_string(hide_password=False)
    admin = create_engine(url.set(drivername="postgresql+psycopg2", database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def test_migration_0005_fills_unit_vectors_of_stored_craters_and_goes_back(scratch_url):
    """0005 adds each crater's unit vector, generated from lon/lat, to craters stored before it
    (the table is rewritten): the components are cos(lat) cos(lon), cos(lat) sin(lon), sin(lat),
    the poles exactly (0, 0, +-1); the searches that read them find the stored craters; a
    downgrade removes the columns and the views keep working once re-created."""
    from etl.moon import unit_vector

    assert upgrade(scratch_url, "0004") == "0004"
    lon = np.array([0.0, 90.0, -179.999, 179.5, 20.5, 33.3, -120.0])
    lat = np.array([90.0, -90.0, 0.0, 45.0, -10.0, 60.1, -0.5])
    engine = get_engine(scratch_url)
    try:
        with engine.begin() as conn:
            run_id = conn.execute(text(
                "INSERT INTO detection_runs (run_name, model, config_hash, source_mosaics, code_version, created_at) "
                "VALUES ('before-0005', 'm', 'h', ARRAY['a.tif'], 'v', now()) RETURNING id")).scalar()
            for i, (lo, la) in enumerate(zip(lon, lat)):
                conn.execute(text(
                    "INSERT INTO craters (run_id, crater_id, lon, lat, diameter_km, score, "
                    "x0_px, y0_px, x1_px, y1_px, level) VALUES (:r, :c, :lon, :lat, 2.0, 0.5, 0, 0, 1, 1, 1)"),
                    {"r": run_id, "c": f"c{i}", "lon": float(lo), "lat": float(la)})
        assert upgrade(scratch_url) == "0005"
        with engine.connect() as conn:
            got = pd.DataFrame(conn.execute(text(
                "SELECT crater_id, unit_x, unit_y, unit_z FROM crater_atlas ORDER BY crater_id")).fetchall(),
                columns=["crater_id", "x", "y", "z"])
            assert list(got["crater_id"]) == [f"c{i}" for i in range(len(lon))]
            np.testing.assert_allclose(got[["x", "y", "z"]].to_numpy(), unit_vector(lon, lat), rtol=0, atol=1e-15)
            assert tuple(got.iloc[0, 1:]) == (0.0, 0.0, 1.0) and tuple(got.iloc[1, 1:]) == (0.0, 0.0, -1.0)
            near = Q.craters_within(conn, 20.5, -10.0, 1.0)
            assert list(near["crater_id"]) == ["c4"] and near["distance_km"].iloc[0] == 0.0
            assert set(Q.craters_within(conn, 0.0, 90.0, 100.0)["crater_id"]) == {"c0"}
        from alembic import command

        from atlas_db.migrate import alembic_config

        with engine.begin() as conn:
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0004")
        with engine.connect() as conn:
            assert conn.execute(text(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'craters' "
                "AND column_name LIKE 'unit_%'")).scalar() == 0
        assert upgrade(scratch_url) == "0005"
    finally:
        engine.dispose()


def test_geometry_columns_use_the_moon_srid(atlas_engine):
    with atlas_engine.connect() as conn:
        rows = dict(conn.execute(text(
            "SELECT f_table_name || '.' || f_geometry_column, srid FROM geometry_columns "
            "WHERE f_table_name IN ('craters', 'reference_craters')")).fetchall())
    assert rows == {"craters.geom": MOON_SRID, "reference_craters.geom": MOON_SRID}


@pytest.fixture
def reader_url(atlas_url, atlas_engine):
    role = f"dc_reader_test_{uuid.uuid4().hex[:8]}"
    with atlas_engine.begin() as conn:
        ensure_reader_role(conn, role)
    yield make_url(atlas_url).set(username=role, password=None).render_as_string(hide_password=False)
    with atlas_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE "{role}"')


def test_reader_role_selects_views_and_nothing_else(reader_url, atlas_engine):
    run = f"reader-{uuid.uuid4().hex[:8]}"
    df = synthetic_atlas(200, run, seed=9)
    load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    engine = get_engine(reader_url)
    try:
        with engine.connect() as conn:
            for view in VIEWS:
                conn.execute(text(f"SELECT * FROM {view} LIMIT 1"))  # every view is readable
            near = Q.nearest_craters(conn, 0.0, 0.0, k=5, run=run)  # and the query functions work
            assert len(near) == 5
        denied = [
            "SELECT * FROM craters LIMIT 1",
            "SELECT * FROM detection_runs LIMIT 1",
            "INSERT INTO detection_runs (run_name, model, config_hash, source_mosaics, code_version, created_at) "
            "VALUES ('x', 'm', 'h', '{a}', 'v', now())",
            f"DELETE FROM craters WHERE crater_id = '{df.crater_id[0]}'",
            "CREATE TABLE evil (x int)",
            "INSERT INTO reference_catalogues (name) VALUES ('evil')",
        ]
        for stmt in denied:
            with engine.connect() as conn:
                with pytest.raises(DBAPIError) as err:
                    conn.execute(text(stmt))
                assert err.value.orig.pgcode in ("42501", "25006"), stmt  # insufficient privilege / read-only
    finally:
        engine.dispose()
    with atlas_engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM crater_atlas WHERE run_name = :r"), {"r": run}).scalar()
    assert n == 200


def test_query_cli_outputs(atlas_url, atlas_engine, capsys, tmp_path):
    run = f"cli-{uuid.uuid4().hex[:8]}"
    df = synthetic_atlas(300, run, seed=4)
    load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    lon, lat = float(df.lon[0]), float(df.lat[0])
    out = tmp_path / "near.geojson"
    assert query_main(["nearest", "--lon", str(lon), "--lat", str(lat), "-k", "3", "--run", run,
                       "--db", atlas_url, "--format", "geojson", "-o", str(out)]) == 0
    fc = json.loads(out.read_text())
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 3
    assert fc["features"][0]["properties"]["crater_id"] == df.crater_id[0]
    assert fc["features"][0]["geometry"]["coordinates"] == [lon, lat]
    assert query_main(["box", "--lon-min", "170", "--lat-min", "-90", "--lon-max", "-170", "--lat-max", "90",
                       "--run", run, "--db", atlas_url, "--format", "csv"]) == 0
    csv = capsys.readouterr().out.splitlines()
    expected = ((df.lon >= 170) | (df.lon <= -170)).sum()
    assert csv[0].startswith("run_name,crater_id,lon,lat") and len(csv) - 1 == expected
    assert query_main(["polygon", "--wkt", "POINT(0 0)", "--db", atlas_url]) == 2
    capsys.readouterr()
    assert query_main(["runs", "--db", atlas_url, "--format", "csv"]) == 0
    runs = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("run_name")
    assert runs.loc[run, "kind"] == "detection" and runs.loc[run, "n_rows"] == len(df)


def test_db_cli_upgrade_hides_password(atlas_url, capsys):
    url = make_url(atlas_url).set(password="s3cret-pw").render_as_string(hide_password=False)
    assert db_main(["upgrade", "--db", url]) == 0
    out = capsys.readouterr()
    assert "s3cret-pw" not in out.out + out.err and "is at revision 0005" in out.out


def test_missing_server_is_reported_without_credentials(capsys):
    url = "postgresql://someone:hunter22@127.0.0.1:1/nowhere"
    assert db_main(["upgrade", "--db", url]) == 1
    err = capsys.readouterr().err
    assert "hunter22" not in err and "no PostgreSQL server answers" in err


def _doc_sql_blocks() -> list[str]:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "sql.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", doc, flags=re.S)
    return [s.strip() for b in blocks for s in b.split(";") if "SELECT" in s]


def test_documented_sql_runs_and_agrees_with_the_python_queries(atlas_engine):
    run = f"docs-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(12)
    near = pd.DataFrame({"lon": rng.uniform(19.0, 22.0, 300), "lat": rng.uniform(-11.5, -8.5, 300),
                         "diameter_km": rng.uniform(1.0, 20.0, 300)})  # some inside the documented 50 km
    df = synthetic_atlas(3300, run, seed=12, catalogue=pd.concat([synthetic_catalogue(3000, seed=12), near]))
    load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    blocks = _doc_sql_blocks()
    assert len(blocks) >= 8
    with atlas_engine.connect() as conn:
        for sql in blocks:
            conn.exec_driver_sql(sql).fetchall()  # every pasted query runs as written
        py_ids = set(Q.craters_within(conn, 20.5, -10, 50.0, run=run)["crater_id"])
        radius_sqls = [s for s in blocks if "20.5, -10" in s]
        assert len(radius_sqls) == 2 and py_ids  # the function call and the written-out search
        for radius_sql in radius_sqls:
            assert {r.crater_id for r in conn.exec_driver_sql(radius_sql) if r.run_name == run} == py_ids
        box_sql = next(s for s in blocks if "ST_MakeEnvelope(170, -20, 190, 20" in s)
        doc_box = {r.crater_id for r in conn.exec_driver_sql(box_sql)}
        py_box = set(Q.craters_in_box(conn, 170, -20, -170, 20, run=run)["crater_id"])
        assert py_box and py_box <= doc_box
