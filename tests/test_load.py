"""``etl load`` against the real PostGIS server: idempotent, atomic, validated, concurrent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

import atlas_db.bulk as B
import etl.load as L
from atlas_db.synthetic import age_provenance, atlas_provenance, synthetic_ages, synthetic_atlas
from etl.cli import main as cli_main
from etl.contracts import ContractError, write_ages, write_atlas

REPO = Path(__file__).resolve().parents[1]


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _snapshot(engine, run: str) -> pd.DataFrame:
    """Every stored value of a run's craters plus each row version's xmin (a new version = a write)."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.crater_id, c.lon, c.lat, c.diameter_km, c.score, c.x0_px, c.y0_px, c.x1_px, c.y1_px, c.level, "
            "c.xmin::text AS xmin FROM craters c JOIN detection_runs r ON r.id = c.run_id "
            "WHERE r.run_name = :run ORDER BY c.crater_id"), {"run": run})
        return pd.DataFrame(rows.fetchall(), columns=list(rows.keys()))


def _age_snapshot(engine, age_run: str) -> pd.DataFrame:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT crater_id, p_pnc, p_nc, p_ic, p_ec, p_cc, age_class, entropy FROM crater_with_age "
            "WHERE age_run = :r ORDER BY crater_id"), {"r": age_run})
        return pd.DataFrame(rows.fetchall(), columns=list(rows.keys()))


def _run_exists(engine, run: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM detection_runs WHERE run_name = :r"), {"r": run}).scalar() == 1


@pytest.fixture
def atlas_file(tmp_path):
    run = _name("load")
    df = synthetic_atlas(1500, run, seed=7)
    path = tmp_path / "atlas.gpkg"
    write_atlas(df, path, atlas_provenance(run))
    return path, run, df


def test_load_stores_the_file_and_reload_changes_nothing(atlas_engine, atlas_file):
    path, run, df = atlas_file
    first = L.load_atlas(path, engine=atlas_engine)
    assert (first.inserted, first.updated, first.deleted) == (len(df), 0, 0)
    snap = _snapshot(atlas_engine, run)
    expected = df.sort_values("crater_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(snap.drop(columns="xmin"), expected, check_dtype=False)

    again = L.load_atlas(path, engine=atlas_engine)
    assert (again.inserted, again.updated, again.deleted, again.unchanged) == (0, 0, 0, len(df))
    pd.testing.assert_frame_equal(_snapshot(atlas_engine, run), snap)  # same values, same row versions


def test_reload_of_edited_file_updates_only_what_changed(atlas_engine, atlas_file, tmp_path):
    path, run, df = atlas_file
    L.load_atlas(path, engine=atlas_engine)
    before = _snapshot(atlas_engine, run).set_index("crater_id")
    edited = df.copy()
    edited.loc[3, "score"] = 0.123
    dropped = edited.loc[10, "crater_id"]
    edited = edited.drop(index=10)
    path2 = tmp_path / "atlas_v2.parquet"
    write_atlas(edited, path2, atlas_provenance(run))
    res = L.load_atlas(path2, engine=atlas_engine)
    assert (res.inserted, res.updated, res.deleted) == (0, 1, 1)
    after = _snapshot(atlas_engine, run).set_index("crater_id")
    assert dropped not in after.index and len(after) == len(df) - 1
    changed = after.index[after["xmin"] != before.loc[after.index, "xmin"]]
    assert list(changed) == [df.loc[3, "crater_id"]]
    assert after.loc[df.loc[3, "crater_id"], "score"] == 0.123


def test_longitudes_0_360_are_normalised_on_load(atlas_engine, tmp_path):
    run = _name("lon360")
    df = synthetic_atlas(50, run, seed=2)
    df.loc[0, "lon"] = 200.0
    path = tmp_path / "a.csv"
    write_atlas(df, path, atlas_provenance(run))
    L.load_atlas(path, engine=atlas_engine)
    snap = _snapshot(atlas_engine, run).set_index("crater_id")
    assert snap.loc[df.loc[0, "crater_id"], "lon"] == -160.0


def test_exception_before_commit_leaves_database_unchanged(atlas_engine, atlas_file, monkeypatch):
    path, run, df = atlas_file

    def boom(conn, result):
        assert result.inserted == len(df)  # the rows were written inside the transaction ...
        raise RuntimeError("injected failure")

    monkeypatch.setattr(B, "_before_commit", boom)
    with pytest.raises(RuntimeError, match="injected"):
        L.load_atlas(path, engine=atlas_engine)
    assert not _run_exists(atlas_engine, run)  # ... and none of them survived
    monkeypatch.undo()
    L.load_atlas(path, engine=atlas_engine)
    before = _snapshot(atlas_engine, run)
    changed = df.assign(score=df["score"] / 2)

    def boom_update(conn, result):
        assert result.updated == len(df)
        raise RuntimeError("injected update failure")

    monkeypatch.setattr(B, "_before_commit", boom_update)
    with pytest.raises(RuntimeError, match="injected"):
        L.load_atlas_frame(changed, atlas_provenance(run), engine=atlas_engine)
    pd.testing.assert_frame_equal(_snapshot(atlas_engine, run), before)


@pytest.mark.parametrize("bulk", [False, True], ids=["rows-maintained", "keys-rebuilt"])
def test_load_killed_mid_way_leaves_database_unchanged(atlas_url, atlas_engine, atlas_file, bulk):
    """kill -9 of a load that has written everything but not committed; with ``bulk`` after it
    dropped and re-created the table's keys and indexes (the primary key and the age table's
    foreign key on it included): the run is absent and every key and index is still valid."""
    path, run, _ = atlas_file
    settings = "B._BULK_MIN_ROWS, B._BULK_FACTOR, B._REFERRER_FACTOR = 1, 0, 1e9" if bulk else ""
    child = textwrap.dedent(f"""
        import sys, time
        import atlas_db.bulk as B
        import etl.load as L
        from sqlalchemy import text
        def hang(conn, result):
            pk = conn.execute(text("SELECT conindid FROM pg_constraint WHERE conname = 'pk_craters'")).scalar()
            print("STAGED", result.inserted, pk, flush=True)
            time.sleep(120)
        B._before_commit = hang
        {settings}
        L.load_atlas({str(path)!r}, {atlas_url!r})
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pk_before = _pk_index_oid(atlas_engine)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.startswith("STAGED"), line
        assert (int(line.split()[2]) != pk_before) == bulk  # inside the load: the primary key was rebuilt
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not _run_exists(atlas_engine, run)
    assert {"pk_craters", "uq_craters_crater_id_run_id", "fk_craters_run_id_detection_runs", "ix_craters_run_id",
            "ix_craters_geom"} <= _rebuilt_objects(atlas_engine, "craters", "puf")
    assert "fk_age_estimates_crater_pk_craters" in _rebuilt_objects(atlas_engine, "age_estimates", "f")
    assert _pk_index_oid(atlas_engine) == pk_before
    # Nothing is left locked: the same load now completes.
    assert L.load_atlas(path, engine=atlas_engine).inserted > 0


BAD_ATLAS = [
    ("diameter_km", 5, float("nan"), "not a finite number"),
    ("lat", 7, 95.0, "outside [-90, 90]"),
    ("lon", 2, 400.0, "outside [-180, 360]"),
    ("score", 9, 1.5, "outside [0, 1]"),
    ("diameter_km", 1, -3.0, "not positive"),
    ("level", 4, 0, "positive integer"),
]


@pytest.mark.parametrize("field,row,value,message", BAD_ATLAS)
def test_bad_atlas_is_rejected_with_file_row_field(atlas_engine, tmp_path, field, row, value, message):
    run = _name("bad")
    df = synthetic_atlas(20, run, seed=1)
    path = tmp_path / "bad.csv"
    write_atlas(df, path, atlas_provenance(run))
    raw = pd.read_csv(path)
    raw.loc[row - 1, field] = value  # rows count from 1 in messages
    raw.to_csv(path, index=False)
    with pytest.raises(ContractError) as err:
        L.load_atlas(path, engine=atlas_engine)
    (problem,) = err.value.problems
    assert (problem.file, problem.row, problem.field) == (str(path), row, field)
    assert message in str(err.value) and f"row {row}" in str(err.value)
    assert not _run_exists(atlas_engine, run)


def test_missing_provenance_is_rejected(atlas_engine, tmp_path, atlas_file):
    _, run, df = atlas_file
    path = tmp_path / "plain.csv"
    df.to_csv(path, index=False)
    with pytest.raises(ContractError, match="provenance"):
        L.load_atlas(path, engine=atlas_engine)
    assert not _run_exists(atlas_engine, run)


@pytest.fixture
def loaded_run(atlas_engine):
    run = _name("ages-base")
    df = synthetic_atlas(800, run, seed=3)
    L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    return run, df


def test_ages_load_and_reload(atlas_engine, loaded_run, tmp_path):
    run, df = loaded_run
    ages = synthetic_ages(df["crater_id"].iloc[:600], seed=1)
    age_run = _name("ages")
    path = tmp_path / "ages.gpkg"
    write_ages(ages, path, age_provenance(age_run, run))
    first = L.load_ages(path, engine=atlas_engine)
    assert (first.inserted, first.updated) == (600, 0)
    snap = _age_snapshot(atlas_engine, age_run)
    pd.testing.assert_frame_equal(snap, ages.sort_values("crater_id").reset_index(drop=True), check_dtype=False)
    again = L.load_ages(path, engine=atlas_engine)
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)


def _bad_ages(df, kind):
    ages = synthetic_ages(df["crater_id"].iloc[:100], seed=2)
    if kind == "sum":
        ages.loc[4, "p_cc"] += 0.2
        return ages, 5, "p_pnc,p_nc,p_ic,p_ec,p_cc", "sum to"
    if kind == "class":
        ages.loc[8, "age_class"] = "Jurassic"
        return ages, 9, "age_class", "not one of"
    if kind == "nan":
        ages.loc[0, "p_ic"] = np.nan
        return ages, 1, "p_ic", "not a finite number"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["sum", "class", "nan"])
def test_bad_ages_are_rejected(atlas_engine, loaded_run, tmp_path, kind):
    run, df = loaded_run
    ages, row, field, message = _bad_ages(df, kind)
    age_run = _name("badages")
    path = tmp_path / "ages.csv"
    ages.to_csv(path, index=False)
    (tmp_path / "ages.csv.provenance.json").write_text(json.dumps(
        {"contract": "deepcraters.ages", "version": 1, "provenance": age_provenance(age_run, run).to_dict()}))
    with pytest.raises(ContractError) as err:
        L.load_ages(path, engine=atlas_engine)
    problems = [p for p in err.value.problems if p.row == row]
    assert problems and problems[0].field == field and problems[0].file == str(path)
    assert message in str(err.value)
    assert _age_snapshot(atlas_engine, age_run).empty


def test_ages_of_unknown_run_or_unknown_craters_are_rejected(atlas_engine, loaded_run):
    run, df = loaded_run
    ages = synthetic_ages(df["crater_id"].iloc[:50], seed=4)
    age_run = _name("orphan")
    with pytest.raises(ContractError, match="provenance.atlas_run.*not in the database"):
        L.load_ages_frame(ages, age_provenance(age_run, "no-such-run"), engine=atlas_engine, source="a.parquet")
    ages.loc[[6, 20], "crater_id"] = ["feedfacefeedface", "0123456789abcdef"]
    with pytest.raises(ContractError) as err:
        L.load_ages_frame(ages, age_provenance(age_run, run), engine=atlas_engine, source="a.parquet")
    assert [(p.file, p.row, p.field) for p in err.value.problems] == [("a.parquet", 7, "crater_id"),
                                                                      ("a.parquet", 21, "crater_id")]
    with atlas_engine.connect() as conn:  # not even the age run row was written
        assert conn.execute(text("SELECT count(*) FROM age_run_info WHERE run_name = :r"), {"r": age_run}).scalar() == 0


def _load_concurrently(frames, runs, url) -> list:
    """Load each frame as its own run, all at once (threads released together); their results."""
    results, errors = {}, []
    barrier = threading.Barrier(len(frames))

    def work(i):
        try:
            barrier.wait()
            results[i] = L.load_atlas_frame(frames[i], atlas_provenance(runs[i]), url)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(frames))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return [results[i] for i in range(len(frames))]


def test_concurrent_loads_of_different_runs_both_succeed(atlas_url, atlas_engine):
    runs = [_name("conc"), _name("conc")]
    frames = [synthetic_atlas(3000, r, seed=i) for i, r in enumerate(runs)]
    results = _load_concurrently(frames, runs, atlas_url)
    for i, run in enumerate(runs):
        assert results[i].inserted == 3000
        assert len(_snapshot(atlas_engine, run)) == 3000


def test_cli_load_reports_and_fails_cleanly(atlas_url, atlas_file, tmp_path, capsys):
    path, run, df = atlas_file
    assert cli_main(["load", "atlas", str(path), "--db", atlas_url, "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"{len(df)} inserted" in out
    bad = tmp_path / "bad.csv"
    write_atlas(df.head(5), bad, atlas_provenance(_name("cli")))
    raw = pd.read_csv(bad)
    raw.loc[2, "lat"] = -91
    raw.to_csv(bad, index=False)
    assert cli_main(["load", "atlas", str(bad), "--db", atlas_url, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "row 3, field 'lat'" in err and "nothing written" in err


def _rebuilt_objects(engine, table: str = "craters", contypes: str = "uf") -> set[str]:
    """Names of ``table``'s valid indexes and validated constraints of ``contypes`` (pg_constraint
    letters): what a bulk load drops and rebuilds, and what must be in place after it."""
    with engine.connect() as conn:
        idx = conn.execute(text("SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                                "WHERE x.indrelid = to_regclass(:t) AND x.indisvalid"), {"t": table}).scalars()
        con = conn.execute(text("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(:t) "
                                "AND convalidated AND contype = ANY(:c)"), {"t": table, "c": list(contypes)}).scalars()
        return set(idx) | set(con)


def test_bulk_load_rebuilds_indexes_atomically_and_concurrently(atlas_url, atlas_engine, monkeypatch):
    """The bulk path (indexes and foreign key dropped, rows copied, all rebuilt in the load's
    transaction) stores the same rows, leaves every index and constraint in place after a
    commit and after a failure, and serialises concurrent bulk loads instead of failing them."""
    monkeypatch.setattr(B, "_BULK_MIN_ROWS", 1)
    monkeypatch.setattr(B, "_BULK_FACTOR", 0)  # every new run takes the bulk path
    expected = {"ix_craters_geom", "ix_craters_run_id", "uq_craters_crater_id_run_id",
                "fk_craters_run_id_detection_runs", "pk_craters"}
    assert expected <= _rebuilt_objects(atlas_engine)

    run = _name("bulk")
    df = synthetic_atlas(2000, run, seed=21)

    def boom(conn, result):
        assert result.inserted == len(df)
        raise RuntimeError("injected bulk failure")

    monkeypatch.setattr(B, "_before_commit", boom)
    with pytest.raises(RuntimeError, match="injected bulk"):
        L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    assert not _run_exists(atlas_engine, run) and expected <= _rebuilt_objects(atlas_engine)
    monkeypatch.setattr(B, "_before_commit", lambda conn, result: None)

    res = L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    assert (res.inserted, res.updated, res.deleted) == (len(df), 0, 0)
    assert expected <= _rebuilt_objects(atlas_engine)
    pd.testing.assert_frame_equal(_snapshot(atlas_engine, run).drop(columns="xmin"),
                                  df.sort_values("crater_id").reset_index(drop=True), check_dtype=False)
    again = L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)  # stored run: upsert path
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)
    with atlas_engine.connect() as conn:  # the rebuilt index answers queries
        plan = conn.exec_driver_sql("EXPLAIN SELECT 1 FROM craters ORDER BY geom <-> "
                                    "ST_SetSRID(ST_MakePoint(1, 0), 104903) LIMIT 1").fetchall()
    assert any("ix_craters_geom" in row[0] for row in plan)

    runs = [_name("bulkconc"), _name("bulkconc")]
    frames = [synthetic_atlas(1500, r, seed=30 + i) for i, r in enumerate(runs)]
    results = _load_concurrently(frames, runs, atlas_url)
    assert [results[i].inserted for i in range(2)] == [1500, 1500]
    assert expected <= _rebuilt_objects(atlas_engine)


def _pk_index_oid(engine, table: str = "craters") -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT conindid::bigint FROM pg_constraint WHERE conrelid = to_regclass(:t) "
                                 "AND contype = 'p'"), {"t": table}).scalar()


def _run_ids(engine, run: str) -> np.ndarray:
    """The run's primary keys in Z-order (the order the load copied its rows in)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT c.id, c.lon, c.lat FROM craters c JOIN detection_runs r ON r.id = c.run_id "
                                 "WHERE r.run_name = :run"), {"run": run}).fetchall()
    ids, lon, lat = (np.array(v) for v in zip(*rows))
    return ids[B.spatial_order(lon, lat)]


def test_bulk_load_rebuilds_primary_key_and_numbers_rows_itself(atlas_url, atlas_engine, monkeypatch):
    """A bulk load may also drop and rebuild the primary key (and the age table's foreign key
    that hangs on it), numbering its rows from the sequence itself: after a failure the key,
    that foreign key and the sequence's promise (no id reused) hold; after a commit the run's
    ids are one block in copy order, every index and constraint is valid, and later loads
    draw ids past the block. While another session holds the age table, the load does not
    wait for it: it keeps the primary key and still loads."""
    monkeypatch.setattr(B, "_BULK_MIN_ROWS", 1)
    monkeypatch.setattr(B, "_BULK_FACTOR", 0)
    monkeypatch.setattr(B, "_REFERRER_FACTOR", 1e9)  # the shared test database holds age rows
    expected = {"pk_craters", "uq_craters_crater_id_run_id", "fk_craters_run_id_detection_runs", "ix_craters_geom",
                "ix_craters_run_id"}
    age_fk = {"fk_age_estimates_crater_pk_craters", "pk_age_estimates"}
    run = _name("bulkpk")
    df = synthetic_atlas(2000, run, seed=41)
    pk_before = _pk_index_oid(atlas_engine)

    monkeypatch.setattr(B, "_before_commit", lambda conn, result: (_ for _ in ()).throw(RuntimeError("injected")))
    with pytest.raises(RuntimeError, match="injected"):
        L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    assert _pk_index_oid(atlas_engine) == pk_before and expected <= _rebuilt_objects(atlas_engine)
    assert age_fk <= _rebuilt_objects(atlas_engine, "age_estimates", "pf")
    monkeypatch.setattr(B, "_before_commit", lambda conn, result: None)

    res = L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    assert res.inserted == len(df)
    assert _pk_index_oid(atlas_engine) != pk_before  # rebuilt
    assert expected <= _rebuilt_objects(atlas_engine)
    assert age_fk <= _rebuilt_objects(atlas_engine, "age_estimates", "pf")
    ids = _run_ids(atlas_engine, run)
    np.testing.assert_array_equal(ids, np.arange(ids[0], ids[0] + len(df)))  # one block, in copy order
    pd.testing.assert_frame_equal(_snapshot(atlas_engine, run).drop(columns="xmin"),
                                  df.sort_values("crater_id").reset_index(drop=True), check_dtype=False)
    ages = synthetic_ages(df["crater_id"], seed=41)  # the re-added foreign key serves the ages
    assert L.load_ages_frame(ages, age_provenance(_name("bulkpkages"), run), engine=atlas_engine).inserted == len(df)

    later = _name("bulkpk")  # not bulk: ids from nextval per row, past the block and the failed load's
    monkeypatch.setattr(B, "_BULK_MIN_ROWS", 10**9)
    L.load_atlas_frame(synthetic_atlas(50, later, seed=42), atlas_provenance(later), engine=atlas_engine)
    assert _run_ids(atlas_engine, later).min() > ids[-1]

    monkeypatch.setattr(B, "_BULK_MIN_ROWS", 1)
    held = _name("bulkpk")
    pk_now = _pk_index_oid(atlas_engine)
    with atlas_engine.connect() as other:
        other.execute(text("SELECT count(*) FROM age_estimates"))  # holds ACCESS SHARE until rollback
        res = L.load_atlas_frame(synthetic_atlas(300, held, seed=43), atlas_provenance(held), engine=atlas_engine)
        other.rollback()
    assert res.inserted == 300 and _pk_index_oid(atlas_engine) == pk_now  # kept, not waited for
    assert expected <= _rebuilt_objects(atlas_engine)


def test_bulk_reference_load_rebuilds_primary_key(atlas_engine, monkeypatch):
    """Nothing hangs on reference_craters' primary key: a bulk load always rebuilds it."""
    monkeypatch.setattr(B, "_BULK_MIN_ROWS", 1)
    monkeypatch.setattr(B, "_BULK_FACTOR", 0)
    name = _name("bulkref")
    cat = synthetic_atlas(500, name, seed=44)[["lon", "lat", "diameter_km"]]
    before = _pk_index_oid(atlas_engine, "reference_craters")
    res = L.load_reference_frame(cat, name, engine=atlas_engine)
    assert res.inserted == len(cat) and _pk_index_oid(atlas_engine, "reference_craters") != before
    assert {"pk_reference_craters", "uq_reference_craters_catalogue_id_ref_id",
            "ix_reference_craters_geom"} <= _rebuilt_objects(atlas_engine, "reference_craters", "puf")


def test_fixed_width_encoder_writes_the_same_bytes():
    """Binary COPY of ids of one width gathers numpy arrays (``_binary_fixed_rows``): byte for
    byte the rows the DataFrame path writes, in a permuted order, with a fixed column and
    numbered ids; ids of mixed widths, or missing, take the DataFrame path."""
    from etl.contracts import ATLAS_COLUMNS, validate_atlas

    df = validate_atlas(synthetic_atlas(2500, "enc", seed=3), atlas_provenance("enc"))
    dtypes = {"id": "int64", "run_id": "int32", **ATLAS_COLUMNS}
    order = B.spatial_order(df["lon"].to_numpy(), df["lat"].to_numpy())
    fast = B._fixed_width_columns(df, dtypes)
    assert fast is not None and fast["crater_id"].dtype == np.dtype("S16")
    rows = order[700:1900]
    ids = np.arange(41, 41 + len(rows), dtype=np.int64)
    expected = B._binary_rows(df.take(rows).assign(run_id=np.int32(9), id=ids), dtypes)
    assert B._binary_fixed_rows(fast, rows, len(rows), dtypes, {"run_id": np.int32(9), "id": ids}) == expected
    mixed = df.assign(crater_id=df["crater_id"].where(df.index % 7 > 0, "short"))
    assert B._fixed_width_columns(mixed, dtypes) is None
    assert B._fixed_width_columns(df.assign(crater_id=df["crater_id"].astype(object)), dtypes) is None



def test_spatial_order_is_a_stable_sort_of_z_codes():
    """``spatial_order`` (one sort of code-and-row-number keys) is the permutation of a stable
    argsort of the Z-codes: ties (points of one cell, repeated points) keep their row order,
    and the edges of the grid (lon -180 and 180, the poles) sort like the reference."""
    rng = np.random.default_rng(5)
    lon = np.concatenate([rng.uniform(-180, 180, 5000), [-180.0, 179.9999999, 180.0, 0.0, 0.0], np.full(50, 12.5)])
    lat = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 5000))), [-90.0, 90.0, 0.0, -90.0, 90.0],
                          rng.uniform(3.0, 3.0001, 50)])  # the last 50 share one cell

    def spread(v):  # bit i -> bit 2i, written out bit by bit
        return sum(((v >> np.uint64(i)) & np.uint64(1)) << np.uint64(2 * i) for i in range(16))

    x = np.clip((lon + 180.0) * (65535.0 / 360.0), 0, 65535).astype(np.uint64)
    y = np.clip((lat + 90.0) * (65535.0 / 180.0), 0, 65535).astype(np.uint64)
    reference = np.argsort((spread(x) << np.uint64(1)) | spread(y), kind="stable")
    got = B.spatial_order(lon, lat)
    np.testing.assert_array_equal(got, reference)
    cell = np.arange(len(lon) - 50, len(lon))
    at = np.flatnonzero(np.isin(got, cell))
    assert np.array_equal(got[at], cell) and np.all(np.diff(at) == 1)  # one cell: together, in row order

def test_ids_of_any_length_and_script_round_trip(atlas_engine):
    """Binary COPY groups rows by text length and encodes ASCII in one numpy pass: ids of
    mixed lengths and non-ASCII ids must still arrive intact, each with its own row. Ages
    find their craters by these ids through a CSV COPY: quotes, commas, line breaks and
    "NA" must survive it."""
    run = _name("ids")
    df = synthetic_atlas(300, run, seed=8)
    odd = ["NA", "a,b", 'say "hi"', "line\nbreak", " padded ", "back\\slash"]
    df["crater_id"] = odd + [f"c{i}" if i % 3 else f"krater-{i}-ä€😀" for i in range(len(odd), len(df))]
    L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    snap = _snapshot(atlas_engine, run).drop(columns="xmin").set_index("crater_id")
    expected = df.set_index("crater_id").loc[snap.index]
    assert len(snap) == len(df)
    pd.testing.assert_frame_equal(snap, expected, check_dtype=False)
    ages = synthetic_ages(df["crater_id"], seed=8)
    age_run = _name("idages")
    assert L.load_ages_frame(ages, age_provenance(age_run, run), engine=atlas_engine).inserted == len(df)
    pd.testing.assert_frame_equal(_age_snapshot(atlas_engine, age_run).set_index("crater_id").sort_index(),
                                  ages.set_index("crater_id").sort_index(), check_dtype=False,
                                  check_index_type=False)


def test_bulk_ages_load_rebuilds_indexes_atomically(atlas_engine, loaded_run, monkeypatch):
    monkeypatch.setattr(B, "_BULK_MIN_ROWS", 1)
    monkeypatch.setattr(B, "_BULK_FACTOR", 0)  # every new age run takes the bulk path
    expected = {"ix_age_estimates_crater_pk", "fk_age_estimates_age_run_id_age_runs",
                "fk_age_estimates_crater_pk_craters", "pk_age_estimates"}
    assert expected <= _rebuilt_objects(atlas_engine, "age_estimates", "pf")
    run, df = loaded_run
    ages = synthetic_ages(df["crater_id"], seed=6)
    age_run = _name("bulkages")

    def boom(conn, result):
        assert result.inserted == len(ages)
        raise RuntimeError("injected bulk failure")

    monkeypatch.setattr(B, "_before_commit", boom)
    with pytest.raises(RuntimeError, match="injected bulk"):
        L.load_ages_frame(ages, age_provenance(age_run, run), engine=atlas_engine)
    assert _age_snapshot(atlas_engine, age_run).empty and expected <= _rebuilt_objects(atlas_engine, "age_estimates", "pf")
    monkeypatch.setattr(B, "_before_commit", lambda conn, result: None)
    res = L.load_ages_frame(ages, age_provenance(age_run, run), engine=atlas_engine)
    assert (res.inserted, res.updated, res.deleted) == (len(ages), 0, 0) and expected <= _rebuilt_objects(atlas_engine, "age_estimates", "pf")
    pd.testing.assert_frame_equal(_age_snapshot(atlas_engine, age_run),
                                  ages.sort_values("crater_id").reset_index(drop=True), check_dtype=False)
    fewer = ages.iloc[::2]  # a stored run: staged upsert, and the rows the file dropped go
    res = L.load_ages_frame(fewer, age_provenance(age_run, run), engine=atlas_engine)
    assert (res.inserted, res.updated, res.deleted) == (0, 0, len(ages) - len(fewer))


def test_load_leaves_planner_statistics(atlas_engine):
    """A load that changed rows refreshes the table's statistics, and they stay after it: the
    query functions keep generic plans, which without statistics on craters.run_id chose to
    read a whole run's natural-key index per query (200 ms instead of 1 ms, two runs loaded)."""
    stats = text("SELECT count(*) FROM pg_stats WHERE schemaname = 'public' AND tablename = 'craters' "
                 "AND attname IN ('run_id', 'geom')")
    with atlas_engine.begin() as conn:  # forget them first (the test role is a superuser)
        conn.execute(text("DELETE FROM pg_statistic WHERE starelid = 'craters'::regclass"))
        assert conn.execute(stats).scalar() == 0
    run = _name("stats")
    L.load_atlas_frame(synthetic_atlas(300, run, seed=9), atlas_provenance(run), engine=atlas_engine)
    with atlas_engine.connect() as conn:
        assert conn.execute(stats).scalar() == 2


def _blocks(conn) -> tuple[int, int]:
    """Buffer-cache requests of this transaction on craters and its indexes: (fetched, hit)."""
    return tuple(int(v) for v in conn.execute(text(
        "SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid)), sum(pg_stat_get_xact_blocks_hit(c.oid)) "
        "FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid "
        "WHERE c.oid = 'craters'::regclass OR i.indrelid = 'craters'::regclass")).one())


def _relation_bytes(conn) -> dict[str, int]:
    return dict(conn.execute(text(
        "SELECT c.oid::regclass::text, pg_relation_size(c.oid) FROM pg_class c "
        "LEFT JOIN pg_index i ON i.indexrelid = c.oid "
        "WHERE c.oid = 'craters'::regclass OR i.indrelid = 'craters'::regclass")).fetchall())


def test_load_leaves_the_table_it_changed_in_the_buffer_cache(atlas_engine):
    """After a load, the craters table and its indexes are in shared_buffers (pg_prewarm, which
    the test database has wherever the server ships it): a search reads no block from the OS."""
    from atlas_db import queries as Q

    run = _name("prewarm")
    df = synthetic_atlas(2000, run, seed=11)
    result = L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    with atlas_engine.connect() as conn:
        if not conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_prewarm'")).scalar():
            # ensure_database creates it wherever the server ships it and the role may
            assert not conn.execute(text(
                "SELECT count(*) FROM pg_available_extensions a, pg_roles r WHERE a.name = 'pg_prewarm' "
                "AND r.rolname = current_user AND r.rolsuper")).scalar()
            assert result.prewarmed_mb == 0.0  # a server without contrib: the load skips the step
            return
        total = sum(_relation_bytes(conn).values())
        budget = conn.execute(text("SELECT pg_size_bytes(current_setting('shared_buffers'))")).scalar() * B._PREWARM_SHARE
        assert total <= budget  # the test database is small against any shared_buffers
        assert result.prewarmed_mb == pytest.approx(total / 2**20)
        fetched0, hit0 = _blocks(conn)
        got = Q.craters_within(conn, float(df["lon"].iloc[0]), float(df["lat"].iloc[0]), 200.0, run=run)
        assert len(got) > 0
        fetched1, hit1 = _blocks(conn)
        assert fetched1 > fetched0 and fetched1 - fetched0 == hit1 - hit0  # every block a buffer hit
    again = L.load_atlas_frame(df, atlas_provenance(run), engine=atlas_engine)
    assert again.prewarmed_mb == 0.0  # nothing changed, nothing to read in


def test_prewarm_reads_the_spatial_index_first_within_its_budget(atlas_engine, monkeypatch):
    run = _name("prewarm-budget")
    L.load_atlas_frame(synthetic_atlas(500, run, seed=12), atlas_provenance(run), engine=atlas_engine)
    with atlas_engine.connect() as conn:
        if not conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_prewarm'")).scalar():
            pytest.skip("this server has no pg_prewarm (PostgreSQL contrib)")
        sizes = _relation_bytes(conn)
        shared = conn.execute(text("SELECT pg_size_bytes(current_setting('shared_buffers'))")).scalar()
        cur = conn.connection.dbapi_connection.cursor()
        # a budget that holds the GiST index and not the heap besides: the index alone is read
        monkeypatch.setattr(B, "_PREWARM_SHARE", (sizes["ix_craters_geom"] + 1) / shared)
        assert B.prewarm(cur, "craters") == sizes["ix_craters_geom"]
        monkeypatch.setattr(B, "_PREWARM_SHARE", 0.0)
        assert B.prewarm(cur, "craters") == 0
        monkeypatch.setattr(B, "_PREWARM_SHARE", 0.5)
        cur.execute("DROP EXTENSION pg_prewarm")  # inside this connection's transaction, rolled back below
        assert B.prewarm(cur, "craters") == 0
        conn.rollback()
        assert conn.execute(text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_prewarm'")).scalar() == 1
