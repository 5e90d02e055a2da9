"""The bulk load: everything that knows the atlas schema's tables, their lock order and how
rows get into them fast. ``etl.load`` reads and validates a file, then hands the frame here.

One load = one transaction:

1. a per-run advisory lock serialises loads of the *same* run (different runs load
   concurrently);
2. every load locks its table first and its run table second (``_lock_table``);
3. checks that need the database (the age table's atlas run exists, every crater id is
   in it) run first, in the load's transaction;
4. a run with no rows yet is streamed by binary ``COPY`` straight into its table (craters
   and reference craters along a Z-order curve, so neighbours share heap pages; age
   estimates in crater order); when it is large against the table, the table's secondary
   indexes and foreign keys (and its primary key, when little or nothing hangs on it) are
   dropped and rebuilt around it inside the transaction, and the load numbers the rows itself
   (``_load_run``). A run already stored is copied into a temporary staging table and gets
   one ``INSERT ... SELECT ... ON CONFLICT (natural key) DO UPDATE ... WHERE ... IS
   DISTINCT FROM`` of the new or changed rows, and rows of the run that the file no longer
   holds are deleted: after a load the run in the database is exactly the file;
5. commit, then ANALYZE the table that changed. A crash or error anywhere before the commit
   leaves the database as it was, and re-running the same load updates nothing (no new row
   versions, no dead tuples).

Durability is the server's: a load commits with the cluster's ``synchronous_commit``. Turning
it off for the load's transaction would save one WAL flush (milliseconds against seconds of
load) at the price of a crash silently losing a load that reported success.

Frames arrive validated (``etl.contracts``); this module checks only what needs the database.
"""
from __future__ import annotations

import io
import struct
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import psycopg2.errors
from psycopg2 import sql
from sqlalchemy import UniqueConstraint, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import AddConstraint, CreateIndex, DropConstraint, DropIndex
from tqdm import tqdm

from atlas_db.engine import get_engine, safe_url
from atlas_db.models import Base
from etl.contracts import (AGE_COLUMNS, ATLAS_COLUMNS, REFERENCE_COLUMNS, AgeProvenance, AtlasProvenance,
                           ContractError, Problem)
from etl.contracts import fixed_width_text as _fixed_width_text  # one owner: etl's lower floor

# Advisory-lock namespace for per-run load locks (arbitrary constant: "DCLD").
_LOAD_LOCK_CLASS = 0x44434C44
_COPY_CHUNK_ROWS = 100_000
_PG_TYPES = {"string": "text", "float64": "float8", "int32": "int4", "int64": "int8"}
_BINARY_TYPES = {"float64": ">f8", "int32": ">i4", "int64": ">i8"}  # fixed-width fields, big-endian
#: A load of a new run that brings at least _BULK_MIN_ROWS rows and more than _BULK_FACTOR
#: times the rows the table already holds rebuilds the table's spatial index, natural-key
#: index and foreign key once after copying, instead of maintaining them row by row.
#: Measured with a second run of 1.3 million craters into a table holding one: 11.5 s
#: rebuilding (about 2.9 us per row of the whole table) vs 26.1 s maintaining (about 17 us
#: per new row: GiST inserts, unique-index inserts, per-row foreign-key checks). So a rebuild
#: pays while the rows already there number less than about 5x the new ones; 4x leaves a
#: margin. Its price is an exclusive lock: queries of the table wait for the load's commit.
_BULK_MIN_ROWS = 100_000
_BULK_FACTOR = 0.25
#: A bulk load rebuilds the primary key too (dropping and re-adding the foreign keys of other
#: tables that hang on it) when those tables hold at most _REFERRER_FACTOR times the new rows:
#: re-adding such a key checks every referencing row (an index probe each), while keeping the
#: primary key costs a B-tree insert and its WAL record per new row. Measured at 3 million
#: craters on 2 cores: COPY with the primary key kept, about 3.5 us a row of server CPU;
#: without it and with ids sent by the client instead of a per-row ``nextval``, about 2.0 us;
#: the sorted rebuild of the key, 0.25 us a row.
_REFERRER_FACTOR = 0.25
#: Settings for a load's own transaction only (SET LOCAL): memory for in-memory hash joins
#: (the zero-change anti-join, the stale-row DELETE) and for the index builds.
_LOAD_SETTINGS = {"work_mem": "256MB", "maintenance_work_mem": "512MB"}
#: A load that would delete more than this fraction of a stored run's rows is refused unless
#: the caller says ``replace=True`` (``deepcraters load --replace``): that is what a header-only
#: or truncated file looks like, and it would wipe the run (an atlas run's age estimates
#: cascade away with its craters). A file that re-detects the same area keeps most crater ids.
_REPLACE_FRACTION = 0.5
#: After a load that changed rows, the table is read into PostgreSQL's buffer cache
#: (``prewarm``) as long as what is read stays within this share of ``shared_buffers``.
_PREWARM_SHARE = 0.5


@dataclass(frozen=True)
class LoadResult:
    """What one load changed."""

    kind: str            # "atlas", "ages" or "reference"
    run_name: str        # detection run, age run or catalogue name
    rows: int            # rows in the file
    inserted: int
    updated: int
    deleted: int
    seconds: float
    provenance_updated: bool = False  # the stored run's provenance (its run row) was rewritten
    prewarmed_mb: float = 0.0  # of the changed table, read into the server's buffer cache after the commit (``prewarm``)

    @property
    def unchanged(self) -> int:
        return self.rows - self.inserted - self.updated

    def summary(self) -> str:
        provenance = ", provenance updated" if self.provenance_updated else ""
        return (f"{self.kind} {self.run_name!r}: {self.rows} rows, {self.inserted} inserted, {self.updated} updated, "
                f"{self.unchanged} unchanged, {self.deleted} deleted{provenance} ({self.seconds:.2f} s)")


class ReplaceRefused(RuntimeError):
    """A load would delete most of a stored run and the caller did not ask to replace it."""


def _before_commit(conn, result: LoadResult) -> None:
    """Hook called inside the transaction just before COMMIT (tests inject failures here)."""


# --------------------------------------------------------------------------- binary COPY


class _ProgressReader(io.RawIOBase):
    """File-like view of an iterator of (bytes, rows) chunks that advances a progress bar as
    COPY reads it. Chunks are made on demand: the client encodes the next chunk while the
    server is still parsing the bytes already sent, so encoding overlaps the COPY."""

    def __init__(self, chunks, bar):
        self._chunks = iter(chunks)
        self._bar = bar
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not len(self._buf):
            data, rows = next(self._chunks, (None, 0))
            if data is None:
                break
            self._buf = memoryview(data)
            if self._bar is not None and rows:
                self._bar.update(rows)
        if size is None or size < 0:
            size = len(self._buf)
        out, self._buf = bytes(self._buf[:size]), self._buf[size:]
        return out


def _encode_text(values: np.ndarray) -> np.ndarray:
    """UTF-8 bytes of a string column as a numpy bytes array. ASCII (every crater id made by
    ``make_crater_ids``) converts in one C loop; anything else goes through ``np.char.encode``."""
    try:
        return values.astype("S")
    except UnicodeEncodeError:
        return np.char.encode(values, "utf-8")


def _binary_rows(df: pd.DataFrame, dtypes: dict[str, str]) -> bytes:
    """Rows of ``df`` in PostgreSQL's binary COPY tuple format (no header/trailer).

    Built with numpy structured arrays, one per distinct tuple of text lengths, because
    binary COPY fields are length-prefixed; row order does not matter to COPY, but the
    groups keep the frame's order when all texts have one length (the usual case), which
    keeps a spatially sorted frame sorted in the staging table."""
    n = len(df)
    if n == 0:
        return b""
    cols = list(dtypes)
    text_cols = [c for c in cols if dtypes[c] == "string"]
    encoded = {c: _encode_text(df[c].to_numpy(dtype=str)) for c in text_cols}
    lengths = np.stack([np.char.str_len(encoded[c]) for c in text_cols], axis=1) if text_cols \
        else np.zeros((n, 0), dtype=np.int64)
    if not text_cols or (lengths == lengths[0]).all():
        uniq, inverse = lengths[:1], None  # one group: no sort, no gather
    else:
        uniq, inverse = np.unique(lengths, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
    parts = []
    for g, lens in enumerate(uniq):
        idx = slice(None) if inverse is None else np.flatnonzero(inverse == g)
        fields = [("nfields", ">i2")]
        t = 0
        for c in cols:
            kind = dtypes[c]
            if kind == "string":
                fields += [(f"{c}__len", ">i4"), (c, f"S{max(int(lens[t]), 1)}" if lens[t] else "V0")]
                t += 1
            else:
                fields += [(f"{c}__len", ">i4"), (c, _BINARY_TYPES[kind])]
        rec = np.empty(n if inverse is None else len(idx), dtype=np.dtype(fields))
        rec["nfields"] = len(cols)
        t = 0
        for c in cols:
            kind = dtypes[c]
            if kind == "string":
                rec[f"{c}__len"] = int(lens[t])
                if lens[t]:
                    rec[c] = encoded[c][idx]
                t += 1
            else:
                rec[f"{c}__len"] = np.dtype(_BINARY_TYPES[kind]).itemsize
                rec[c] = df[c].to_numpy()[idx]
        parts.append(rec.tobytes())
    return b"".join(parts)


def _fixed_width_columns(df: pd.DataFrame, dtypes: dict[str, str]) -> dict[str, np.ndarray] | None:
    """The frame's columns of ``dtypes`` as numpy arrays when every text column is of fixed width
    (``etl.contracts.fixed_width_text``), for ``_binary_fixed_rows``; else None."""
    out = {}
    for c, kind in dtypes.items():
        if c not in df.columns:
            continue
        out[c] = _fixed_width_text(df[c]) if kind == "string" else df[c].to_numpy()
        if out[c] is None:
            return None
    return out


def _binary_fixed_rows(columns: dict[str, np.ndarray], rows, n: int, dtypes: dict[str, str],
                       constants: dict) -> bytes:
    """``_binary_rows`` for the rows ``rows`` (an index array or slice, ``n`` rows) of columns whose
    texts all have one width: one record array filled column by column, no DataFrame. The
    columns of ``constants`` (not in ``columns``) get a scalar or an array of ``n`` values."""
    fields = [("nfields", ">i2")]
    for c, kind in dtypes.items():
        width = columns[c].dtype.itemsize if kind == "string" and c in columns else None
        fields += [(f"{c}__len", ">i4"), (c, f"S{width}" if width else _BINARY_TYPES[kind])]
    rec = np.empty(n, dtype=np.dtype(fields))
    rec["nfields"] = len(dtypes)
    for c, kind in dtypes.items():
        rec[f"{c}__len"] = rec.dtype.fields[c][0].itemsize
        rec[c] = columns[c][rows] if c in columns else constants[c]
    return rec.tobytes()


def copy_frame(cur, table: str, df: pd.DataFrame, dtypes: dict[str, str], progress: bool = False,
               desc: str = "COPY", order: np.ndarray | None = None, fixed: dict | None = None,
               serial: tuple[str, int] | None = None) -> None:
    """Stream ``df`` into ``table`` (columns ``dtypes``) with binary COPY from memory, in the
    row order ``order`` (a permutation; default: as is), with the columns of ``fixed`` set to
    one value each and the column ``serial[0]`` numbered ``serial[1]``, ``serial[1] + 1``, ...
    in that order, encoding chunk by chunk as COPY reads. Texts of one width (the usual case)
    take ``_binary_fixed_rows``, which gathers numpy arrays instead of taking DataFrame rows."""
    fast = _fixed_width_columns(df, dtypes)

    def chunks():
        yield b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0), 0
        for start in range(0, len(df), _COPY_CHUNK_ROWS):
            n = min(_COPY_CHUNK_ROWS, len(df) - start)
            if fast is not None:
                rows = slice(start, start + n) if order is None else order[start:start + n]
                constants = dict(fixed or {})
                if serial is not None:
                    constants[serial[0]] = np.arange(serial[1] + start, serial[1] + start + n, dtype=np.int64)
                yield _binary_fixed_rows(fast, rows, n, dtypes, constants), n
                continue
            part = df.iloc[start:start + _COPY_CHUNK_ROWS] if order is None \
                else df.take(order[start:start + _COPY_CHUNK_ROWS])
            extra = dict(fixed or {})
            if serial is not None:
                extra[serial[0]] = np.arange(serial[1] + start, serial[1] + start + len(part), dtype=np.int64)
            yield _binary_rows(part.assign(**extra) if extra else part, dtypes), len(part)
        yield struct.pack(">h", -1), 0

    stmt = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT binary)").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, dtypes)))
    with tqdm(total=len(df), desc=desc, unit="row", disable=not progress, leave=False) as bar:
        cur.copy_expert(stmt.as_string(cur), _ProgressReader(chunks(), bar), size=1 << 20)


def _create_stage(cur, name: str, dtypes: dict[str, str], key: str) -> None:
    """Temporary staging table dropped at commit; a text ``key`` column collates like the
    natural-key columns it joins (``COLLATE "C"``, see migration 0002)."""
    cols = sql.SQL(", ").join(sql.SQL("{} {}{}").format(sql.Identifier(c), sql.SQL(_PG_TYPES[t]),
                                                        sql.SQL(' COLLATE "C"' if c == key and t == "string" else ""))
                              for c, t in dtypes.items())
    cur.execute(sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(sql.Identifier(name), cols))


# --------------------------------------------------------------------------- upserts


def _upsert_sql(table: str, key: list[str], fixed: dict, columns: list[str], source: str) -> "object":
    """INSERT INTO table (fixed..., columns...) SELECT <fixed exprs>, columns FROM source
    ON CONFLICT (key) DO UPDATE SET <non-key columns> WHERE (old) IS DISTINCT FROM (new),
    counting inserted and updated rows (xmax = 0 marks a fresh insert)."""
    I = sql.Identifier  # noqa: E741
    target = list(fixed) + columns
    values = list(fixed.values()) + [sql.SQL("s.") + I(c) for c in columns]  # fixed: Composables
    update = [c for c in target if c not in key]
    src = sql.SQL(source) if isinstance(source, str) else source
    return sql.SQL(
        "WITH up AS (INSERT INTO {t} AS t ({cols}) SELECT {vals} FROM {src} "
        "ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE ({old}) IS DISTINCT FROM ({new}) "
        "RETURNING (xmax = 0) AS inserted) "
        "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM up"
    ).format(
        t=I(table), cols=sql.SQL(", ").join(map(I, target)), vals=sql.SQL(", ").join(values),
        src=src, key=sql.SQL(", ").join(map(I, key)),
        sets=sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(I(c), I(c)) for c in update),
        old=sql.SQL(", ").join(sql.SQL("t.") + I(c) for c in update),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.") + I(c) for c in update),
    )


def _changed_rows(stage: str, table: str, scope: tuple[str, int], key: str, columns: list[str]):
    """Staged rows that are new or differ from the stored row: one hash anti-join, so a re-run
    with nothing changed costs a join instead of a speculative insert per row. ON CONFLICT
    still guards rows that a concurrent load inserts meanwhile."""
    I = sql.Identifier  # noqa: E741
    return sql.SQL("(SELECT s.* FROM {stage} s LEFT JOIN {table} t ON t.{scope} = {val} AND t.{key} = s.{key} "
                   "WHERE t.{key} IS NULL OR ({old}) IS DISTINCT FROM ({new})) s").format(
        stage=I(stage), table=I(table), scope=I(scope[0]), val=sql.Literal(scope[1]), key=I(key),
        old=sql.SQL(", ").join(sql.SQL("t.") + I(c) for c in columns if c != key),
        new=sql.SQL(", ").join(sql.SQL("s.") + I(c) for c in columns if c != key))


def _upsert_run(cur, table: str, key: str, values: dict) -> tuple[int, bool]:
    """Upsert one run row by its name; return its id and whether a stored row was rewritten
    (its provenance changed). Unchanged rows are not rewritten."""
    I = sql.Identifier  # noqa: E741
    cols = list(values)
    update = [c for c in cols if c != key]
    stmt = sql.SQL(
        "INSERT INTO {t} AS t ({cols}) VALUES ({ph}) ON CONFLICT ({key}) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new}) RETURNING id, xmax <> 0"
    ).format(t=I(table), cols=sql.SQL(", ").join(map(I, cols)), ph=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
             key=I(key), sets=sql.SQL(", ").join(sql.SQL("{} = EXCLUDED.{}").format(I(c), I(c)) for c in update),
             old=sql.SQL(", ").join(sql.SQL("t.") + I(c) for c in update),
             new=sql.SQL(", ").join(sql.SQL("EXCLUDED.") + I(c) for c in update))
    cur.execute(stmt, [values[c] for c in cols])
    row = cur.fetchone()
    if row is None:  # unchanged: fetch the existing id
        cur.execute(sql.SQL("SELECT id FROM {} WHERE {} = %s").format(I(table), I(key)), (values[key],))
        return int(cur.fetchone()[0]), False
    return int(row[0]), bool(row[1])  # xmax <> 0: an existing row was updated, not inserted


def _index_stage(cur, stage: str, key: str) -> None:
    """Index and analyze the staging table's key: the stale-row DELETE probes it once per stored
    row, and without an index a mis-estimated plan turns that anti-join quadratic."""
    cur.execute(sql.SQL("CREATE INDEX ON {} ({})").format(sql.Identifier(stage), sql.Identifier(key)))
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(stage)))


def spatial_order(lon_deg, lat_deg) -> np.ndarray:
    """Permutation that sorts points along a Z-order curve over 2^16 x 2^16 lon/lat cells (the
    order of a geohash). Rows inserted in this order sit near their neighbours on disk, so a
    radius or polygon query reads a few heap pages instead of one page per crater. Sorting
    here costs a numpy sort; sorting by ST_GeoHash in SQL cost ~3 us per row. The 32-bit
    Z-code goes in the high half of a 64-bit key and the row number in the low half: sorting
    those unique keys (numpy's vectorised sort) gives the permutation of a stable argsort of
    the codes (the same, tested) in 0.3x its time (10 million points: 0.7 to 1.2 s, against
    2.6 to 3.9 s)."""
    def spread(v):  # bit i of a 16-bit value -> bit 2i
        v = (v | (v << np.uint64(8))) & np.uint64(0x00FF00FF)
        v = (v | (v << np.uint64(4))) & np.uint64(0x0F0F0F0F)
        v = (v | (v << np.uint64(2))) & np.uint64(0x33333333)
        return (v | (v << np.uint64(1))) & np.uint64(0x55555555)

    x = np.clip((np.asarray(lon_deg, dtype=float) + 180.0) * (65535.0 / 360.0), 0, 65535).astype(np.uint64)
    y = np.clip((np.asarray(lat_deg, dtype=float) + 90.0) * (65535.0 / 180.0), 0, 65535).astype(np.uint64)
    code = (spread(x) << np.uint64(1)) | spread(y)
    if len(code) >= 2**32:  # row numbers no longer fit the low half
        return np.argsort(code, kind="stable")
    key = (code << np.uint64(32)) | np.arange(len(code), dtype=np.uint64)
    return (np.sort(key) & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _set_local(cur) -> None:
    for name, value in _LOAD_SETTINGS.items():
        cur.execute("SELECT set_config(%s, %s, true)", (name, value))


def _referrers(table: str) -> list:
    """Foreign keys of other tables that reference ``table`` (they hang on its primary key)."""
    t = Base.metadata.tables[table]
    return sorted((fk for other in Base.metadata.tables.values() if other is not t
                   for fk in other.foreign_key_constraints if fk.referred_table is t), key=lambda c: c.name)


def _rebuilt_ddl(table: str, primary_key: bool = False) -> tuple[list[str], list[str]]:
    """DROP and CREATE statements, from the models, for what a bulk load rebuilds: the table's
    indexes, unique constraints and foreign keys, and with ``primary_key`` its primary key and
    the foreign keys of other tables that hang on it (dropped first, re-added last)."""
    t = Base.metadata.tables[table]
    dialect = postgresql.psycopg2.dialect()
    constraints = [c for c in t.constraints if isinstance(c, UniqueConstraint)] + \
        sorted(t.foreign_key_constraints, key=lambda c: c.name)
    referrers = _referrers(table) if primary_key else []
    pk = [t.primary_key] if primary_key else []
    drops = [DropConstraint(c) for c in referrers + pk + constraints] + [DropIndex(i) for i in t.indexes]
    creates = [AddConstraint(c) for c in pk + constraints] + [CreateIndex(i) for i in t.indexes] + \
        [AddConstraint(c) for c in referrers]
    return ([str(d.compile(dialect=dialect)) for d in drops], [str(c.compile(dialect=dialect)) for c in creates])


def _may_rebuild_primary_key(cur, table: str, rows: int) -> bool:
    """Whether a bulk load of ``rows`` new rows into ``table`` (held ACCESS EXCLUSIVE) also
    rebuilds its primary key: only if it can lock every table whose foreign keys hang on that
    key at once (``NOWAIT``: a load never waits for, or deadlocks with, a session using them;
    it keeps the key instead) and those tables hold at most ``_REFERRER_FACTOR`` x ``rows``
    rows. On a no, the locks taken here are released (rolled back to a savepoint)."""
    I = sql.Identifier  # noqa: E741
    tables = sorted({fk.table.name for fk in _referrers(table)})
    limit = int(_REFERRER_FACTOR * rows)
    cur.execute("SAVEPOINT deepcraters_primary_key")
    try:
        for other in tables:
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE NOWAIT").format(I(other)))
        ok = True
        for other in tables:
            cur.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) r").format(I(other)), (limit + 1,))
            ok = ok and int(cur.fetchone()[0]) <= limit
    except psycopg2.errors.LockNotAvailable:
        ok = False
    if not ok:
        cur.execute("ROLLBACK TO SAVEPOINT deepcraters_primary_key")
    cur.execute("RELEASE SAVEPOINT deepcraters_primary_key")
    return ok


def _serial_column(table: str) -> str | None:
    """The table's primary key column when it is a single autoincrementing integer (the ids a
    bulk load numbers itself), else None."""
    cols = list(Base.metadata.tables[table].primary_key.columns)
    return cols[0].name if len(cols) == 1 and cols[0].autoincrement is True else None


def _reserve_ids(cur, table: str, column: str, rows: int) -> int:
    """Take ``rows`` consecutive values of ``table.column``'s sequence for a bulk load, which
    numbers its rows itself instead of evaluating ``nextval`` per row in COPY; returns the
    first. Sound because the load holds the table ACCESS EXCLUSIVE: no other insert into it
    can draw from the sequence meanwhile (and the primary key would refuse a repeat). Like
    ``nextval``, a rolled-back load leaves a gap, never a reused id."""
    cur.execute("SELECT nextval(pg_get_serial_sequence(%s, %s))", (table, column))
    first = int(cur.fetchone()[0])
    cur.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s)", (table, column, first + rows - 1))
    return first


def _wants_bulk(cur, table: str, rows: int) -> bool:
    """Whether a load of ``rows`` new rows should rebuild ``table``'s indexes (see _BULK_FACTOR).
    Reads the planner's row estimate from the catalogue, which takes no lock on the table."""
    if rows < _BULK_MIN_ROWS:
        return False
    cur.execute("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = to_regclass(%s)", (table,))
    return float(cur.fetchone()[0]) * _BULK_FACTOR < rows


def _lock_table(cur, table: str, rows: int, first: tuple[str, ...] = ()) -> bool:
    """Lock ``table`` for a load of ``rows`` rows before the load touches anything else, and say
    whether it may take the bulk path (``_wants_bulk``): ACCESS EXCLUSIVE for a bulk load, ROW
    EXCLUSIVE (what its writes take anyway) otherwise. Every load locks its table first and
    its run table second: a bulk load re-adds the foreign key to the run table, which needs a
    lock there that conflicts with another load's run upsert, so the opposite order in two
    loads would deadlock. For the same reason a bulk load first takes SHARE ROW EXCLUSIVE on
    the tables of ``first``: those its re-added foreign keys reference that other loads lock
    before ``table`` (an atlas load's cascading delete locks craters, then age_estimates)."""
    bulk = _wants_bulk(cur, table, rows)
    for other in first if bulk else ():
        cur.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(other)))
    mode = "ACCESS EXCLUSIVE" if bulk else "ROW EXCLUSIVE"
    cur.execute(sql.SQL("LOCK TABLE {} IN {} MODE").format(sql.Identifier(table), sql.SQL(mode)))
    return bulk


def _load_run(cur, table: str, scope: tuple[str, int], key: str, df: pd.DataFrame, dtypes: dict[str, str],
              stage: str, bulk: bool, progress: bool, desc: str, order: np.ndarray, *, replace: bool = False,
              what: str = "the run") -> tuple[int, int, int]:
    """Make the rows of one run (``scope`` = (column, id)) in ``table`` exactly the rows of ``df``
    (columns ``dtypes``, natural key ``key``); returns (inserted, updated, deleted). Unless
    ``replace``, raises ``ReplaceRefused`` (the caller's transaction then rolls back) when that
    would delete more than ``_REPLACE_FRACTION`` of the run's stored rows; ``what`` names the
    run in that message.

    A run with no rows yet is COPYed straight into ``table``: COPY inserts in batches, which
    costs a fraction of an ``INSERT ... SELECT`` from a staging table row by row (the run's
    advisory lock excludes a concurrent load of the run, and validation excludes duplicate
    keys; the unique index would still reject one). When that load is large against the table
    (``bulk``, under the ACCESS EXCLUSIVE lock of ``_lock_table``), it drops the table's
    secondary indexes and foreign key (and its primary key, see ``_may_rebuild_primary_key``),
    copies with ids it reserved from the sequence in one step (``_reserve_ids``), and rebuilds
    them, all in its transaction: a crash rolls the drop back with the rows. Meanwhile other
    loads and queries of the table wait for the commit.

    A run already stored is staged, then one anti-join + upsert writes the new or changed
    rows, and the stale-row DELETE runs only when the counts say a stored row of the run was
    not staged (the run's rows before, minus the staged rows that matched one): a re-run
    skips it."""
    I = sql.Identifier  # noqa: E741
    rows = len(df)
    cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(I(table), I(scope[0])), (scope[1],))
    before = int(cur.fetchone()[0])
    if before == 0:
        drops, creates = _rebuilt_ddl(table, bulk and _may_rebuild_primary_key(cur, table, rows)) if bulk \
            else ([], [])
        for stmt in drops:
            cur.execute(stmt)
        serial_col = _serial_column(table) if bulk and rows else None
        serial = (serial_col, _reserve_ids(cur, table, serial_col, rows)) if serial_col else None
        copy_frame(cur, table, df, {**({serial_col: "int64"} if serial_col else {}), scope[0]: "int32", **dtypes},
                   progress, desc, order=order, fixed={scope[0]: np.int32(scope[1])}, serial=serial)
        for stmt in creates:
            cur.execute(stmt)
        return rows, 0, 0
    columns = list(dtypes)
    _create_stage(cur, stage, dtypes, key)
    copy_frame(cur, stage, df, dtypes, progress, desc, order=order)
    cur.execute(sql.SQL("ANALYZE {}").format(I(stage)))  # row counts for the join plans below
    cur.execute(_upsert_sql(table, [scope[0], key], {scope[0]: sql.Literal(scope[1])}, columns,
                            _changed_rows(stage, table, scope, key, columns)))
    inserted, updated = cur.fetchone()
    stale = before - (rows - inserted)
    if stale == 0:
        return inserted, updated, 0
    if not replace and stale > _REPLACE_FRACTION * before:
        raise ReplaceRefused(
            f"{what} holds {before} rows and this file {rows}: loading it would delete {stale} of them "
            f"(more than {_REPLACE_FRACTION:.0%}), as a header-only or truncated file would. Nothing written. "
            "If the file is meant to replace the run, load it again with --replace.")
    _index_stage(cur, stage, key)
    cur.execute(sql.SQL("DELETE FROM {t} t WHERE t.{scope} = %s AND NOT EXISTS "
                        "(SELECT 1 FROM {stage} s WHERE s.{key} = t.{key})").format(
        t=I(table), scope=I(scope[0]), stage=I(stage), key=I(key)), (scope[1],))
    if cur.rowcount != stale:  # the run lock makes this impossible; never commit a surprise
        raise RuntimeError(f"{table}: expected to delete {stale} stale rows, deleted {cur.rowcount}")
    return inserted, updated, cur.rowcount


def _lock_run(cur, kind: str, name: str) -> None:
    cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOAD_LOCK_CLASS, f"{kind}:{name}"))


def _engine(url: str | None, engine):
    if engine is not None:
        return engine, False
    return get_engine(url), True


def _check_schema(conn, url_text: str) -> None:
    if conn.execute(text("SELECT to_regclass('public.craters')")).scalar() is None:
        raise RuntimeError(f"no atlas schema in {url_text}: run 'deepcraters db upgrade' first")


_ANALYZE_AFTER = {"atlas": "craters", "ages": "age_estimates", "reference": "reference_craters"}


def _transaction(url, engine, body):
    """Run ``body(conn, cur)`` in one transaction; returns its result. After a commit that
    changed rows, refresh the planner's statistics (outside the load's transaction, so
    concurrent loads never queue on ANALYZE): without them a freshly filled table gets
    nested-loop plans that are orders of magnitude slower."""
    eng, owned = _engine(url, engine)
    try:
        with eng.begin() as conn:
            _check_schema(conn, safe_url(eng.url))
            cur = conn.connection.dbapi_connection.cursor()
            result = body(conn, cur)
        if result.inserted + result.updated + result.deleted > 0:
            # Autocommit: ANALYZE writes its statistics in a transaction of its own, which must
            # commit (a raw cursor's implicit transaction was silently rolled back on release).
            with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                cur = conn.connection.dbapi_connection.cursor()
                cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(_ANALYZE_AFTER[result.kind])))
                result = replace(result, prewarmed_mb=prewarm(cur, _ANALYZE_AFTER[result.kind]) / 2**20)
        return result
    finally:
        if owned:
            eng.dispose()


def prewarm(cur, table: str) -> int:
    """Read ``table`` into the server's buffer cache with ``pg_prewarm``: its spatial (GiST)
    indexes first, then its rows, then its other indexes, each one only while everything read
    stays within ``_PREWARM_SHARE`` of ``shared_buffers``. Returns the bytes read (0 where the
    database has no ``pg_prewarm`` extension or the role may not use it).

    A load writes its rows through a small ring of buffers and builds its indexes outside the
    cache, so without this the first query at each place reads its pages from the operating
    system: at 10 million craters (2.7 GB with indexes) that was the tail of the query
    latencies (docs/scale.md). ``make db`` sizes ``shared_buffers`` for it (tools/db.sh)."""
    cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_prewarm'")
    if cur.fetchone() is None:
        return 0
    cur.execute(
        "SELECT c.oid::regclass::text, pg_relation_size(c.oid), "
        "       pg_size_bytes(current_setting('shared_buffers')) "
        "FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid LEFT JOIN pg_am a ON a.oid = c.relam "
        "WHERE c.oid = %(t)s::regclass OR i.indrelid = %(t)s::regclass "
        "ORDER BY CASE WHEN a.amname = 'gist' THEN 0 WHEN c.relkind = 'r' THEN 1 ELSE 2 END, c.relname",
        {"t": table})
    rels = cur.fetchall()
    budget, read = (rels[0][2] * _PREWARM_SHARE if rels else 0), 0
    for name, size, _ in rels:
        if read + size > budget:
            continue
        try:
            cur.execute("SELECT pg_prewarm(%s::regclass)", (name,))
        except psycopg2.errors.InsufficientPrivilege:
            return read
        read += size
    return read


# --------------------------------------------------------------------------- loads


def load_atlas_run(df: pd.DataFrame, provenance: AtlasProvenance, url: str | None = None, *, engine=None,
                   progress: bool = False, replace: bool = False) -> LoadResult:
    """Load a validated atlas frame as detection run ``provenance.run_name``; ``replace`` allows
    it to delete most of a stored run (``ReplaceRefused`` otherwise, nothing written)."""
    t0 = time.perf_counter()
    order = spatial_order(df["lon"].to_numpy(), df["lat"].to_numpy())

    def body(conn, cur):
        _lock_run(cur, "atlas", provenance.run_name)
        _set_local(cur)
        bulk = _lock_table(cur, "craters", len(df))
        run_id, rewritten = _upsert_run(cur, "detection_runs", "run_name", {
            "run_name": provenance.run_name, "model": provenance.model, "config_hash": provenance.config_hash,
            "source_mosaics": list(provenance.source_mosaics), "code_version": provenance.code_version,
            "created_at": provenance.created_at})
        inserted, updated, deleted = _load_run(cur, "craters", ("run_id", run_id), "crater_id", df, ATLAS_COLUMNS,
                                               "stage_craters", bulk, progress, f"COPY {provenance.run_name}", order,
                                               replace=replace, what=f"atlas run {provenance.run_name!r}")
        result = LoadResult("atlas", provenance.run_name, len(df), inserted, updated, deleted,
                            time.perf_counter() - t0, provenance_updated=rewritten)
        _before_commit(conn, result)
        return result

    return _with_seconds(_transaction(url, engine, body), t0)


def _crater_pks(cur, atlas_run_id: int, crater_ids: pd.Series) -> np.ndarray:
    """``craters.id`` of each crater id in detection run ``atlas_run_id``, -1 where the run has
    no such crater. The run's ids come over in one CSV COPY and are matched in pandas: at 1.3
    million craters that took about 1 s, where joining a staging table on the server (an
    UPDATE of every staged row) took 3.5 s."""
    buf = io.BytesIO()
    cur.copy_expert(sql.SQL("COPY (SELECT crater_id, id FROM craters WHERE run_id = {}) TO STDOUT WITH (FORMAT csv)")
                    .format(sql.Literal(atlas_run_id)).as_string(cur), buf)
    if not buf.tell():
        return np.full(len(crater_ids), -1, dtype=np.int64)
    buf.seek(0)
    # CSV quoting carries any id through (commas, quotes, newlines); no NA parsing: "NA" is an id.
    known = pd.read_csv(buf, header=None, names=["crater_id", "id"], dtype={"crater_id": str, "id": np.int64},
                        keep_default_na=False, na_filter=False, encoding="utf-8")
    pos = pd.Index(known["crater_id"]).get_indexer(crater_ids)
    return np.where(pos >= 0, known["id"].to_numpy()[pos], -1)



def load_age_run(df: pd.DataFrame, provenance: AgeProvenance, url: str | None = None, *, engine=None,
                 source: str = "<ages>", progress: bool = False, replace: bool = False) -> LoadResult:
    """Load a validated age frame as age run ``provenance.run_name`` over ``provenance.atlas_run``.

    The atlas run must already be loaded and hold every ``crater_id`` of the table (a
    ``ContractError`` naming ``source`` otherwise). Rows are keyed by the crater's primary key
    and written like an atlas run (``_load_run``, ``replace`` as there)."""
    t0 = time.perf_counter()
    dtypes = {"crater_pk": "int64", **{c: t for c, t in AGE_COLUMNS.items() if c != "crater_id"}}

    def body(conn, cur):
        _lock_run(cur, "ages", provenance.run_name)
        _set_local(cur)
        bulk = _lock_table(cur, "age_estimates", len(df), first=("craters",))
        cur.execute("SELECT id FROM detection_runs WHERE run_name = %s", (provenance.atlas_run,))
        row = cur.fetchone()
        if row is None:
            raise ContractError([Problem(source, None, "provenance.atlas_run",
                                         f"detection run {provenance.atlas_run!r} is not in the database "
                                         "(load its atlas first)")])
        atlas_run_id = int(row[0])
        pks = _crater_pks(cur, atlas_run_id, df["crater_id"])
        missing = np.flatnonzero(pks < 0)
        if len(missing):
            ids = df["crater_id"].to_numpy()
            raise ContractError([Problem(source, int(i) + 1, "crater_id",
                                         f"{ids[i]!r} is not a crater of atlas run {provenance.atlas_run!r}")
                                 for i in missing])
        age_run_id, rewritten = _upsert_run(cur, "age_runs", "run_name", {
            "run_name": provenance.run_name, "atlas_run_id": atlas_run_id, "model": provenance.model,
            "config_hash": provenance.config_hash, "code_version": provenance.code_version,
            "created_at": provenance.created_at})
        frame = df.drop(columns="crater_id").assign(crater_pk=pks)
        inserted, updated, deleted = _load_run(cur, "age_estimates", ("age_run_id", age_run_id), "crater_pk", frame,
                                               dtypes, "stage_ages", bulk, progress, f"COPY {provenance.run_name}",
                                               np.argsort(pks, kind="stable"),  # primary-key order
                                               replace=replace, what=f"age run {provenance.run_name!r}")
        result = LoadResult("ages", provenance.run_name, len(df), inserted, updated, deleted, 0.0,
                            provenance_updated=rewritten)
        _before_commit(conn, result)
        return result

    return _with_seconds(_transaction(url, engine, body), t0)


def load_reference_catalogue(df: pd.DataFrame, name: str, url: str | None = None, *, engine=None,
                             source_text: str | None = None, progress: bool = False,
                             replace: bool = False) -> LoadResult:
    """Load a validated reference catalogue frame under ``name`` (its content becomes the frame's;
    ``replace`` allows that to delete most of it, as for a run)."""
    t0 = time.perf_counter()
    order = spatial_order(df["lon"].to_numpy(), df["lat"].to_numpy())

    def body(conn, cur):
        _lock_run(cur, "reference", name)
        _set_local(cur)
        bulk = _lock_table(cur, "reference_craters", len(df))
        cat_id, rewritten = _upsert_run(cur, "reference_catalogues", "name", {"name": name, "source": source_text})
        inserted, updated, deleted = _load_run(cur, "reference_craters", ("catalogue_id", cat_id), "ref_id", df,
                                               REFERENCE_COLUMNS, "stage_reference", bulk, progress, f"COPY {name}",
                                               order, replace=replace, what=f"reference catalogue {name!r}")
        result = LoadResult("reference", name, len(df), inserted, updated, deleted, 0.0,
                            provenance_updated=rewritten)
        _before_commit(conn, result)
        return result

    return _with_seconds(_transaction(url, engine, body), t0)


def _with_seconds(result: LoadResult, t0: float) -> LoadResult:
    return replace(result, seconds=time.perf_counter() - t0)
