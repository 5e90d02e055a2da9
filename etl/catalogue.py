"""Crater catalogues: the one reader of crater lists (CSV, Parquet, GeoPackage, GeoJSON, ...).

Training catalogues (``deepcraters tiles``), the synthetic world's catalogue and the
reference catalogues loaded into the atlas database (``etl.contracts.read_reference``) all
go through :func:`read_catalogue` / :func:`validate_catalogue`. Output frames have ``lon``
(-180..180), ``lat`` (-90..90), ``diameter_km``, ``age_class`` (the :class:`AgeClass`
index, from codes or names in the file) when the catalogue has ages, the id column when
one is named, then the file's other columns.

Errors are in the file contracts' style (:mod:`etl.contracts`): a :class:`CatalogueError`
(a ``ContractError``) lists every problem found, each with its file, row and field. Rows
count data rows from 1 as in every contract (a CSV header is not a row, blank lines are
skipped; a vector file's features count from 1); a frame's rows count from 1 in order.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from etl.age_classes import AGE_CLASS_CODES, AgeClass
from etl.contracts import ContractError, Problem, _check_ids
from etl.moon import MOON_RADIUS_M, great_circle_distance_m, normalize_lon, unit_vector

__all__ = ["AGE_COLUMN", "CatalogueError", "read_catalogue", "read_table", "validate_catalogue"]

#: Two craters are the same when their centres are closer than this fraction of their
#: mean diameter and their diameters differ by less than DUPLICATE_DIAMETER_FRACTION.
DUPLICATE_CENTRE_FRACTION = 0.1
DUPLICATE_DIAMETER_FRACTION = 0.05
#: The age column of our own catalogues: read as ages whenever present.
AGE_COLUMN = "age_class"

_DIAMETER_UNITS_KM = {"km": 1.0, "m": 0.001}
_VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}


class CatalogueError(ContractError):
    """A crater catalogue that cannot be read or fails validation; ``problems`` lists every one."""


def _fail(file: str, message: str, field: str | None = None) -> CatalogueError:
    return CatalogueError([Problem(file, None, field, message)])


# --------------------------------------------------------------------------- read

def _read_csv(path: Path) -> pd.DataFrame:
    """All cells as text (the csv module, so quoted fields and a BOM are handled, and nothing
    is guessed to be missing: "NA" is text). Ragged rows are all reported."""
    file = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            sample = f.read(4096)
            f.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample.splitlines()[0] if sample else ",", delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            records = list(csv.reader(f, dialect))  # the reader loops in C; checks below touch few rows
    except UnicodeDecodeError as exc:
        raise _fail(file, f"not a UTF-8 text CSV ({exc})") from exc
    # Blank lines and rows of empty cells are skipped, as they are not rows to a reader.
    blank = [not r or (not r[0].strip() and not "".join(r).strip()) for r in records]
    records = [r for r, b in zip(records, blank) if not b]
    if not records:
        raise _fail(file, "empty file, expected a header line and crater rows")
    header, rows = [cell.strip() for cell in records[0]], records[1:]
    ragged = np.flatnonzero(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)) != len(header))
    if len(ragged):
        raise CatalogueError([Problem(file, int(k) + 1, None, f"has {len(rows[k])} fields, the header has "
                                      f"{len(header)} ({', '.join(header)})") for k in ragged])
    return pd.DataFrame(rows, columns=header, dtype=object)


def _numbers_where_they_parse(frame: pd.DataFrame, skip) -> pd.DataFrame:
    """A CSV's text columns (other than ``skip``) as numbers where all non-empty cells parse."""
    for column in frame.columns:
        if column in skip or frame[column].dtype != object:
            continue
        stripped = frame[column].str.strip()
        numbers = pd.to_numeric(stripped.replace("", np.nan), errors="coerce")
        if numbers.notna().sum() == (stripped != "").sum() and (stripped != "").any():
            frame[column] = numbers
    return frame


def _read_vector(path: Path, layer, lon_col: str, lat_col: str) -> pd.DataFrame:
    """Attributes of a vector layer (pyogrio), with lon/lat from point geometry when the
    columns are absent. A geographic layer's x/y are taken as lunar degrees (GeoJSON always
    declares WGS84 lon/lat); a projected layer must be lunar and is unprojected."""
    import pyogrio
    import shapely

    from etl.geometry import LunarCRSError, check_lunar_crs

    file = str(path)
    try:
        meta, _, geometry, field_data = pyogrio.raw.read(path, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError and friends
        raise _fail(file, f"cannot read as a vector catalogue ({exc})") from exc
    frame = pd.DataFrame({name: values for name, values in zip(meta["fields"], field_data)})
    if (lon_col not in frame or lat_col not in frame) and geometry is not None:
        points = shapely.from_wkb(geometry)
        kinds = shapely.get_type_id(points)
        bad = np.flatnonzero((kinds != 0) & ~shapely.is_missing(points))
        if len(bad):
            raise CatalogueError([Problem(file, int(i) + 1, "geometry", f"is a {meta['geometry_type']}, expected a "
                                          f"point (or columns {lon_col!r} and {lat_col!r})") for i in bad])
        x, y = shapely.get_x(points), shapely.get_y(points)
        crs = meta.get("crs")
        if crs:
            import pyproj

            if pyproj.CRS(crs).is_projected:
                try:
                    lunar = pyproj.CRS(check_lunar_crs(crs, source=file).to_wkt())
                except LunarCRSError as exc:
                    raise _fail(file, str(exc), "crs") from exc
                x, y = pyproj.Transformer.from_crs(lunar, lunar.geodetic_crs, always_xy=True).transform(x, y)
        frame[lon_col], frame[lat_col] = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return frame


def read_table(path, *, layer=None, lon_col: str = "lon", lat_col: str = "lat") -> pd.DataFrame:
    """A catalogue file's rows, unvalidated: CSV cells as text, Parquet and vector fields as
    stored (lon/lat from a vector layer's points when those columns are absent)."""
    path = Path(path)
    if not path.is_file():
        raise _fail(str(path), "no such catalogue file")
    suffix = path.suffix.lower()
    if suffix in _VECTOR_SUFFIXES:
        return _read_vector(path, layer, lon_col, lat_col)
    if suffix in _PARQUET_SUFFIXES:
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid and friends
            raise _fail(str(path), f"cannot read as Parquet ({exc})") from exc
    return _read_csv(path)


def read_catalogue(path, *, lon_col: str = "lon", lat_col: str = "lat", diameter_col: str = "diameter_km",
                   age_col: str | None = None, id_col: str | None = None, layer=None, diameter_unit: str = "km",
                   on_duplicate: str = "error", on_invalid: str = "error",
                   allow_unlabelled: bool = False) -> pd.DataFrame:
    """Read and validate a crater catalogue (CSV, Parquet, GeoPackage, GeoJSON, ...); see
    :func:`validate_catalogue` for the options. ``layer`` picks a vector layer. A CSV's other
    columns become numbers where all their cells parse. Raises :class:`CatalogueError`
    listing every problem with file, row and field."""
    frame = read_table(path, layer=layer, lon_col=lon_col, lat_col=lat_col)
    # The checked columns are parsed by validation, which says what is wrong with each cell.
    frame = _numbers_where_they_parse(frame, skip={lon_col, lat_col, diameter_col, id_col, age_col, AGE_COLUMN})
    return validate_catalogue(frame, source=str(path), lon_col=lon_col, lat_col=lat_col,
                              diameter_col=diameter_col, age_col=age_col, id_col=id_col,
                              diameter_unit=diameter_unit, on_duplicate=on_duplicate, on_invalid=on_invalid,
                              allow_unlabelled=allow_unlabelled)


# ----------------------------------------------------------------------- validate

def _numbers(raw: np.ndarray, column: str, file: str, problems: list[Problem]) -> np.ndarray:
    """A column as float64; a cell that is missing, not a number or not finite is a problem
    (reported once). Returns NaN there."""
    if raw.dtype.kind in "biuf":
        values = raw.astype(float)
        missing = np.zeros(len(values), dtype=bool)
        text = np.zeros(len(values), dtype=bool)
    else:
        series = pd.Series(raw, dtype=object)
        if pd.api.types.infer_dtype(series, skipna=False) == "string":  # a CSV column: all text (fast path)
            is_text = np.ones(len(series), dtype=bool)
            stripped = series.str.strip()
        else:
            is_text = series.map(type).eq(str).to_numpy()
            stripped = series.copy()
            stripped[is_text] = series[is_text].str.strip()
        values = np.array(pd.to_numeric(stripped, errors="coerce"), dtype=float)
        missing = (stripped.isna().to_numpy() & ~is_text) | (is_text & (stripped == "").to_numpy())
        text = np.isnan(values) & ~missing
        for k in np.flatnonzero(text):  # "nan" and "inf" are numbers, just not finite ones
            try:
                values[k] = float(stripped.iloc[k])
                text[k] = False
            except (TypeError, ValueError):
                pass
    for k in np.flatnonzero(missing):
        problems.append(Problem(file, int(k) + 1, column, "is missing"))
    for k in np.flatnonzero(text):
        problems.append(Problem(file, int(k) + 1, column, f"{raw[k]!r} is not a number"))
    for k in np.flatnonzero(~np.isfinite(values) & ~missing & ~text):
        problems.append(Problem(file, int(k) + 1, column, f"{values[k]} is not a finite number"))
    return np.where(np.isfinite(values), values, np.nan)


def _is_unlabelled(value) -> bool:
    """An empty age: null, NaN, blank text, or -1 (how this reader writes it, so its frames round-trip)."""
    if isinstance(value, (int, np.integer, float, np.floating)) and not isinstance(value, bool):
        return bool(np.isnan(value)) or value == -1
    return value is None or value is pd.NA or (isinstance(value, str) and not value.strip())


def _age_index(value) -> int:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(AgeClass(int(value)))
    if isinstance(value, str) and value.strip():
        return int(AgeClass.parse(value))
    raise ValueError(f"no age class {value!r}")


def _duplicate_pairs(lon, lat, diameter_km) -> list[tuple[int, int]]:
    """Pairs (i < j) of the same crater listed twice, via a k-d tree on unit vectors."""
    from scipy.spatial import cKDTree

    if len(lon) < 2:
        return []
    xyz = unit_vector(lon, lat)
    # Search generously (chord <= angle), then test exactly.
    radius = DUPLICATE_CENTRE_FRACTION * diameter_km * 1000.0 / MOON_RADIUS_M / (1.0 - DUPLICATE_DIAMETER_FRACTION)
    neighbours = cKDTree(xyz).query_ball_point(xyz, r=radius)
    i = np.repeat(np.arange(len(xyz)), [len(n) for n in neighbours])
    j = np.concatenate([np.asarray(n, dtype=np.int64) for n in neighbours])
    keep = j > i
    i, j = i[keep], j[keep]
    angle = np.arctan2(np.linalg.norm(np.cross(xyz[i], xyz[j]), axis=-1), np.sum(xyz[i] * xyz[j], axis=-1))
    mean_d = 0.5 * (diameter_km[i] + diameter_km[j])
    same = ((angle * MOON_RADIUS_M / 1000.0 <= DUPLICATE_CENTRE_FRACTION * mean_d)
            & (np.abs(diameter_km[i] - diameter_km[j])
               <= DUPLICATE_DIAMETER_FRACTION * np.maximum(diameter_km[i], diameter_km[j])))
    return sorted(zip(i[same].tolist(), j[same].tolist()))


def _report(source: str, what: str, problems: list[Problem]) -> str:
    return f"{source}: {what}\n  " + "\n  ".join(str(p) for p in problems)


def validate_catalogue(df: pd.DataFrame, *, source: str = "", lon_col: str = "lon", lat_col: str = "lat",
                       diameter_col: str = "diameter_km", age_col: str | None = None, id_col: str | None = None,
                       diameter_unit: str = "km", on_duplicate: str = "error",
                       on_invalid: str = "error", allow_unlabelled: bool = False) -> pd.DataFrame:
    """Check a crater frame and return it in canonical form (a new frame, fresh index).

    Checks: the columns exist, lon/lat/diameter are finite numbers, lon in [-180, 360]
    (0..360 is normalised to -180..180), lat in [-90, 90], diameter > 0, the age class
    parses with :meth:`AgeClass.parse` (column ``age_col``, or :data:`AGE_COLUMN` when the
    frame has it), the ids (``id_col``, kept as text) are non-empty, short and unique, and no
    crater is listed twice (centres closer than DUPLICATE_CENTRE_FRACTION of the diameter and
    diameters within DUPLICATE_DIAMETER_FRACTION): ``on_duplicate`` "error" names both rows,
    "drop" keeps the first, "keep" allows them. ``on_invalid="drop"`` drops the rows that fail
    the other checks with one warning listing them (real gazetteers list unmeasured craters
    with diameter 0) instead of raising. ``diameter_unit`` is that of ``diameter_col``.
    ``allow_unlabelled``: a missing age (empty cell, null, or -1 as this function writes it) is
    not a problem but an unlabelled crater, ``age_class`` -1 (training tables mix dated and
    undated craters); a present age that does not parse is still one.
    """
    file = source or "catalogue"
    if on_duplicate not in ("error", "drop", "keep"):
        raise ValueError(f"on_duplicate must be 'error', 'drop' or 'keep', not {on_duplicate!r}")
    if on_invalid not in ("error", "drop"):
        raise ValueError(f"on_invalid must be 'error' or 'drop', not {on_invalid!r}")
    if diameter_unit not in _DIAMETER_UNITS_KM:
        raise ValueError(f"diameter_unit must be one of {sorted(_DIAMETER_UNITS_KM)}, not {diameter_unit!r}")
    if age_col is None and AGE_COLUMN in df.columns:
        age_col = AGE_COLUMN
    wanted = [lon_col, lat_col, diameter_col] + [c for c in (age_col, id_col) if c]
    available = ", ".join(map(repr, map(str, df.columns)))
    missing = [Problem(file, None, c, f"required column is missing (available columns: {available})")
               for c in wanted if c not in df.columns]
    if missing:
        raise CatalogueError(missing)

    problems: list[Problem] = []
    lon = _numbers(df[lon_col].to_numpy(), lon_col, file, problems)
    lat = _numbers(df[lat_col].to_numpy(), lat_col, file, problems)
    diameter = _numbers(df[diameter_col].to_numpy(), diameter_col, file, problems)
    with np.errstate(invalid="ignore"):
        for k in np.flatnonzero((lon < -180.0) | (lon > 360.0)):
            problems.append(Problem(file, int(k) + 1, lon_col, f"{lon[k]} is outside [-180, 360] degrees "
                                                                "(0..360 is normalised, anything else is rejected)"))
        for k in np.flatnonzero(np.abs(lat) > 90.0):
            problems.append(Problem(file, int(k) + 1, lat_col, f"{lat[k]} is outside [-90, 90] degrees"))
        for k in np.flatnonzero(diameter <= 0.0):
            problems.append(Problem(file, int(k) + 1, diameter_col, f"{diameter[k]} is not positive"))
    ages = None
    if age_col:
        ages = np.zeros(len(df), dtype=np.int64)
        for k, value in enumerate(df[age_col].to_numpy()):
            if allow_unlabelled and _is_unlabelled(value):
                ages[k] = -1
                continue
            try:
                ages[k] = _age_index(value)
            except ValueError:
                problems.append(Problem(file, k + 1, age_col, f"{value!r} is not a lunar age class "
                                        f"({', '.join(AGE_CLASS_CODES)}, a system name or 0-4)"))
    ids = None
    if id_col:
        # Ids are text as written: "NA" or "007" are ids, not a missing value or a number.
        ids = _check_ids(pd.DataFrame({id_col: df[id_col].map(
            lambda v: v if isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v))
            else str(v)).to_numpy(dtype=object)}), id_col, file, problems)

    invalid = np.zeros(len(df), dtype=bool)
    if problems:
        if on_invalid == "error" or any(p.row is None for p in problems):
            raise CatalogueError(problems)
        invalid[[p.row - 1 for p in problems]] = True
        warnings.warn(_report(file, f"dropped {int(invalid.sum())} invalid row(s):", problems), stacklevel=2)
    valid = ~invalid
    rows = np.flatnonzero(valid) + 1  # the rows as the file counts them

    out = pd.DataFrame({"lon": np.asarray(normalize_lon(lon[valid]), dtype=float).reshape(-1), "lat": lat[valid],
                        "diameter_km": diameter[valid] * _DIAMETER_UNITS_KM[diameter_unit]})
    if ages is not None:
        out["age_class"] = ages[valid]
    if ids is not None:
        out[id_col] = ids.to_numpy()[valid]
    for column in df.columns:
        if column not in wanted and column not in out.columns:
            out[column] = df[column].to_numpy()[valid]

    if on_duplicate != "keep":
        pairs = _duplicate_pairs(out["lon"].to_numpy(), out["lat"].to_numpy(), out["diameter_km"].to_numpy())
        duplicates = []
        for i, j in pairs:
            gap_km = great_circle_distance_m(out.lon[i], out.lat[i], out.lon[j], out.lat[j]) / 1000.0
            duplicates.append(Problem(file, int(rows[j]), f"{lon_col},{lat_col},{diameter_col}",
                                      f"the same crater as row {rows[i]} (centres {gap_km:.3g} km apart, diameters "
                                      f"{out.diameter_km[i]:g} and {out.diameter_km[j]:g} km)"))
        if duplicates and on_duplicate == "error":
            raise CatalogueError(duplicates + [Problem(file, None, None, "pass on_duplicate='drop' to keep the "
                                                                          "first of each crater listed twice")])
        if duplicates:
            dropped = sorted({j for _, j in pairs})
            warnings.warn(_report(file, f"dropped {len(dropped)} duplicate crater(s):", duplicates), stacklevel=2)
            out = out.drop(index=dropped)
    return out.reset_index(drop=True)
