"""Crater catalogues: read CSV / GeoPackage / GeoJSON crater lists and validate them.

Output frames have ``lon`` (-180..180), ``lat`` (-90..90), ``diameter_km`` and, when
an age column is named, ``age_class`` (int :class:`etl.age_classes.AgeClass`), then
the file's other columns. Every error names the file, the row as a user counts it
(CSV: the line number in the file; vector files: the feature's 1-based position)
and the column.
"""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from etl.age_classes import AgeClass
from etl.moon import MOON_RADIUS_M, great_circle_distance_m, normalize_lon, unit_vector

__all__ = ["CatalogueError", "read_catalogue", "validate_catalogue"]

#: Two craters are the same when their centres are closer than this fraction of their
#: mean diameter and their diameters differ by less than DUPLICATE_DIAMETER_FRACTION.
DUPLICATE_CENTRE_FRACTION = 0.1
DUPLICATE_DIAMETER_FRACTION = 0.05

_DIAMETER_UNITS_KM = {"km": 1.0, "m": 0.001}
_VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb"}
_MAX_EXAMPLES = 5


class CatalogueError(ValueError):
    """A crater catalogue that cannot be read or fails validation."""


# --------------------------------------------------------------------------- read

def _read_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """All cells as strings, plus each record's line number in the file (csv module,
    so quoted fields, blank lines and a BOM do not shift the numbers)."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        sample = f.read(4096)
        f.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample.splitlines()[0] if sample else ",", delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
        reader = csv.reader(f, dialect)
        header, rows, lines = None, [], []
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue
            if header is None:
                header = [cell.strip() for cell in record]
                continue
            if len(record) != len(header):
                raise CatalogueError(f"{path}: line {reader.line_num} has {len(record)} fields, "
                                     f"the header has {len(header)} ({', '.join(header)})")
            rows.append(record)
            lines.append(f"line {reader.line_num}")
    if header is None:
        raise CatalogueError(f"{path}: empty file, expected a header line and crater rows")
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    for column in frame.columns:
        # Numbers where a whole column parses; text columns stay text.
        stripped = frame[column].str.strip()
        numbers = pd.to_numeric(stripped.replace("", np.nan), errors="coerce")
        if numbers.notna().sum() == (stripped != "").sum():
            frame[column] = numbers
    return frame, lines


def _read_vector(path: Path, layer, lon_col: str, lat_col: str) -> tuple[pd.DataFrame, list[str]]:
    """Attributes of a vector layer (pyogrio), with lon/lat from point geometry when the
    columns are absent. A geographic layer's x/y are taken as lunar degrees (GeoJSON
    always declares WGS84 lon/lat); a projected layer must be lunar and is unprojected."""
    import pyogrio
    import shapely

    from etl.geometry import LunarCRSError, check_lunar_crs

    try:
        meta, _, geometry, field_data = pyogrio.raw.read(path, layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError and friends
        raise CatalogueError(f"{path}: cannot read as a vector catalogue ({exc})") from exc
    frame = pd.DataFrame({name: values for name, values in zip(meta["fields"], field_data)})
    lines = [f"feature {i + 1}" for i in range(len(frame))]
    if (lon_col not in frame or lat_col not in frame) and geometry is not None:
        points = shapely.from_wkb(geometry)
        kinds = set(shapely.get_type_id(points[~shapely.is_missing(points)]).tolist())
        if kinds - {0}:
            raise CatalogueError(f"{path}: geometry is {meta['geometry_type']}, expected points "
                                 f"(or columns {lon_col!r} and {lat_col!r})")
        x, y = shapely.get_x(points), shapely.get_y(points)
        crs = meta.get("crs")
        if crs:
            import pyproj

            parsed = pyproj.CRS(crs)
            if parsed.is_projected:
                try:
                    lunar = check_lunar_crs(crs, source=str(path))
                except LunarCRSError as exc:
                    raise CatalogueError(str(exc)) from exc
                to_lonlat = pyproj.Transformer.from_crs(pyproj.CRS(lunar.to_wkt()),
                                                        pyproj.CRS(lunar.to_wkt()).geodetic_crs, always_xy=True)
                x, y = to_lonlat.transform(x, y)
        frame[lon_col], frame[lat_col] = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return frame, lines


def read_catalogue(path, *, lon_col: str = "lon", lat_col: str = "lat", diameter_col: str = "diameter_km",
                   age_col: str | None = None, layer=None, diameter_unit: str = "km",
                   on_duplicate: str = "error", on_invalid: str = "error") -> pd.DataFrame:
    """Read and validate a crater catalogue (CSV, GeoPackage, GeoJSON); see :func:`validate_catalogue`.

    ``diameter_unit`` is the unit of ``diameter_col`` ("km" or "m"); ``layer`` picks a
    GeoPackage layer. Raises :class:`CatalogueError` naming file, row and column.
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogueError(f"{path}: no such catalogue file")
    if path.suffix.lower() in _VECTOR_SUFFIXES:
        frame, lines = _read_vector(path, layer, lon_col, lat_col)
    else:
        try:
            frame, lines = _read_csv(path)
        except UnicodeDecodeError as exc:
            raise CatalogueError(f"{path}: not a UTF-8 text CSV ({exc})") from exc
    return validate_catalogue(frame, source=str(path), lon_col=lon_col, lat_col=lat_col,
                              diameter_col=diameter_col, age_col=age_col, diameter_unit=diameter_unit,
                              on_duplicate=on_duplicate, on_invalid=on_invalid, row_labels=lines)


# ----------------------------------------------------------------------- validate

def _fail(source: str, column: str, problem: str, labels: np.ndarray, values) -> CatalogueError:
    values = [v.item() if isinstance(v, np.generic) else v for v in values[:_MAX_EXAMPLES]]
    shown = ", ".join(f"{label} ({value!r})" for label, value in zip(labels[:_MAX_EXAMPLES], values[:_MAX_EXAMPLES]))
    more = f" and {len(labels) - _MAX_EXAMPLES} more" if len(labels) > _MAX_EXAMPLES else ""
    rows = "1 row" if len(labels) == 1 else f"{len(labels)} rows"
    return CatalogueError(f"{source}: column {column!r}: {problem} in {rows}: {shown}{more}")


def _numeric(frame, column) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def _parse_age(value) -> int:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(AgeClass.parse(int(value)))
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


def validate_catalogue(df: pd.DataFrame, *, source: str = "", lon_col: str = "lon", lat_col: str = "lat",
                       diameter_col: str = "diameter_km", age_col: str | None = None,
                       diameter_unit: str = "km", on_duplicate: str = "error", on_invalid: str = "error",
                       row_labels=None) -> pd.DataFrame:
    """Check a crater frame and return it in canonical form (a new frame, fresh index).

    Checks: the columns exist (the error lists those available), lon/lat/diameter are
    finite numbers, lon in [-180, 360] (0..360 is normalised to -180..180), lat in
    [-90, 90], diameter > 0, the age class (if ``age_col``) parses with
    :meth:`AgeClass.parse`, and no crater is listed twice (centres closer than
    DUPLICATE_CENTRE_FRACTION of the diameter and diameters within
    DUPLICATE_DIAMETER_FRACTION): ``on_duplicate`` "error" names both rows, "drop" keeps
    the first, "keep" allows them. ``on_invalid="drop"`` drops rows that fail the other
    checks with a warning naming them (real gazetteers list unmeasured craters with
    diameter 0) instead of raising. ``row_labels`` are the rows as the user counts them
    (e.g. "line 7"); by default "row <index label>".
    """
    source = source or "catalogue"
    if on_duplicate not in ("error", "drop", "keep"):
        raise ValueError(f"on_duplicate must be 'error', 'drop' or 'keep', not {on_duplicate!r}")
    if on_invalid not in ("error", "drop"):
        raise ValueError(f"on_invalid must be 'error' or 'drop', not {on_invalid!r}")
    if diameter_unit not in _DIAMETER_UNITS_KM:
        raise ValueError(f"diameter_unit must be one of {sorted(_DIAMETER_UNITS_KM)}, not {diameter_unit!r}")
    wanted = [lon_col, lat_col, diameter_col] + ([age_col] if age_col else [])
    missing = [c for c in wanted if c not in df.columns]
    if missing:
        raise CatalogueError(f"{source}: missing column(s) {', '.join(map(repr, missing))}; "
                             f"available columns: {', '.join(map(repr, map(str, df.columns)))}")
    labels = np.asarray(list(row_labels) if row_labels is not None else [f"row {i}" for i in df.index], dtype=object)
    if len(labels) != len(df):
        raise ValueError(f"{len(labels)} row labels for {len(df)} rows")

    raw = {c: df[c].to_numpy() for c in wanted}
    lon, lat, diameter = _numeric(df, lon_col), _numeric(df, lat_col), _numeric(df, diameter_col)
    with np.errstate(invalid="ignore"):
        # (column, problem, bad rows, shown values), in the order they are reported.
        checks = [
            (lon_col, "longitude is not a finite number", ~np.isfinite(lon), raw[lon_col]),
            (lat_col, "latitude is not a finite number", ~np.isfinite(lat), raw[lat_col]),
            (diameter_col, "diameter is not a finite number", ~np.isfinite(diameter), raw[diameter_col]),
            (lon_col, "longitude outside [-180, 360] degrees", (lon < -180.0) | (lon > 360.0), lon),
            (lat_col, "latitude outside [-90, 90] degrees", np.abs(lat) > 90.0, lat),
            (diameter_col, "diameter is not positive", diameter <= 0.0, diameter),
        ]
    ages = None
    if age_col:
        ages = np.zeros(len(df), dtype=np.int64)
        bad = np.zeros(len(df), dtype=bool)
        for k, value in enumerate(raw[age_col]):
            try:
                ages[k] = _parse_age(value)
            except ValueError:
                bad[k] = True
        codes = ", ".join(c.code for c in AgeClass)
        checks.append((age_col, f"not a lunar age class ({codes}, a system name or 0-4)", bad, raw[age_col]))
    invalid = np.zeros(len(df), dtype=bool)
    for column, problem, bad, shown in checks:
        if bad.any():
            if on_invalid == "error":
                raise _fail(source, column, problem, labels[bad], shown[bad])
            warnings.warn(str(_fail(source, column, problem + " (dropped)", labels[bad], shown[bad])), stacklevel=2)
            invalid |= bad
    valid = ~invalid
    labels = labels[valid]

    out = pd.DataFrame({"lon": np.asarray(normalize_lon(lon[valid]), dtype=float).reshape(-1), "lat": lat[valid],
                        "diameter_km": diameter[valid] * _DIAMETER_UNITS_KM[diameter_unit]})
    if ages is not None:
        out["age_class"] = ages[valid]
    for column in df.columns:
        if column not in wanted and column not in out.columns:
            out[column] = df[column].to_numpy()[valid]

    if on_duplicate != "keep":
        pairs = _duplicate_pairs(out["lon"].to_numpy(), out["lat"].to_numpy(), out["diameter_km"].to_numpy())
        if pairs and on_duplicate == "error":
            i, j = pairs[0]
            gap_km = great_circle_distance_m(out.lon[i], out.lat[i], out.lon[j], out.lat[j]) / 1000.0
            raise CatalogueError(
                f"{source}: {labels[i]} and {labels[j]} are the same crater (columns {lon_col!r}, {lat_col!r}, "
                f"{diameter_col!r}: centres {gap_km:.3g} km apart, diameters {out.diameter_km[i]:g} and "
                f"{out.diameter_km[j]:g} km){f'; {len(pairs)} such pairs' if len(pairs) > 1 else ''}; "
                "pass on_duplicate='drop' to keep the first of each")
        if pairs:
            dropped = sorted({j for _, j in pairs})
            warnings.warn(f"{source}: dropped {len(dropped)} duplicate crater(s): "
                          f"{', '.join(labels[dropped[:_MAX_EXAMPLES]])}", stacklevel=2)
            out = out.drop(index=dropped)
    return out.reset_index(drop=True)
