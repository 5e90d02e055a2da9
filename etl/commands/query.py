"""``deepcraters query``: spatial queries on the atlas (``atlas_db.queries``), printed as a
table, CSV or GeoJSON.

The database URL comes from ``--db``, else ``DATABASE_URL``, else the local default;
passwords belong in the URL's environment or ``~/.pgpass`` and are never printed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from etl.commands._options import add_db_option


def _read_region(args) -> str:
    if args.wkt:
        return args.wkt
    return Path(args.geojson).read_text()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters query",
        description="Spatial queries on the PostGIS crater atlas. Distances are great-circle distances on the "
                    "lunar sphere (R = 1,737,400 m); longitudes are degrees east in -180..180 (0..360 accepted). "
                    "Regions are lon/lat polygons; run longitudes past 180 (e.g. 170..190) to cross the "
                    "antimeridian. The same SQL is documented in docs/sql.md.",
        epilog="examples:\n"
               "  deepcraters query radius --lon 20.5 --lat -10 --radius-km 50\n"
               "  deepcraters query nearest --lon 179.9 --lat 0 -k 10 --format geojson -o near.geojson\n"
               "  deepcraters query box --lon-min 170 --lat-min -20 --lon-max -170 --lat-max 20 --format csv\n"
               "  deepcraters query polygon --wkt 'POLYGON((160 -30, 200 -25, 195 40, 165 20, 160 -30))'\n"
               "  deepcraters query sfd --lon-min -30 --lat-min -30 --lon-max 30 --lat-max 30\n"
               "  deepcraters query ages --geojson region.geojson --age-run ages-v1\n"
               "  deepcraters query new --run atlas-v1 --catalogue robbins2018",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="query", required=True, metavar="QUERY")

    def common(sp, geo=True):
        add_db_option(sp)
        choices = ["table", "csv", "geojson"] if geo else ["table", "csv"]
        sp.add_argument("--format", choices=choices, default="table", help="output format (default: table)")
        sp.add_argument("-o", "--output", default=None, help="write to this file instead of stdout")

    def point(sp):
        sp.add_argument("--lon", type=float, required=True, help="centre longitude, degrees east")
        sp.add_argument("--lat", type=float, required=True, help="centre latitude, degrees north")

    def region(sp, box_allowed=True):
        g = sp.add_mutually_exclusive_group(required=True)
        g.add_argument("--wkt", help="region polygon as WKT in lon/lat degrees")
        g.add_argument("--geojson", help="file holding the region polygon as GeoJSON (geometry or one feature)")
        if box_allowed:
            g.add_argument("--lon-min", type=float, help="box: western edge (with --lat-min/--lon-max/--lat-max); "
                                                          "lon-min > lon-max crosses the antimeridian")
            sp.add_argument("--lat-min", type=float)
            sp.add_argument("--lon-max", type=float)
            sp.add_argument("--lat-max", type=float)

    sp = sub.add_parser("radius", help="craters within a distance of a point, nearest first")
    point(sp)
    sp.add_argument("--radius-km", type=float, required=True, help="great-circle radius, km")
    sp.add_argument("--run", default=None, help="only this detection run")
    common(sp)

    sp = sub.add_parser("nearest", help="the k craters nearest a point")
    point(sp)
    sp.add_argument("-k", type=int, default=10, help="how many (default 10)")
    sp.add_argument("--run", default=None, help="only this detection run")
    common(sp)

    sp = sub.add_parser("box", help="craters in a lon/lat box (antimeridian-safe)")
    sp.add_argument("--lon-min", type=float, required=True)
    sp.add_argument("--lat-min", type=float, required=True)
    sp.add_argument("--lon-max", type=float, required=True, help="lon-max < lon-min crosses the antimeridian")
    sp.add_argument("--lat-max", type=float, required=True)
    sp.add_argument("--run", default=None, help="only this detection run")
    common(sp)

    sp = sub.add_parser("polygon", help="craters inside a lon/lat polygon (WKT or GeoJSON)")
    region(sp, box_allowed=False)
    sp.add_argument("--run", default=None, help="only this detection run")
    common(sp)

    sp = sub.add_parser("sfd", help="cumulative size-frequency distribution of a region (counts per km^2)")
    region(sp)
    sp.add_argument("--diameters-km", type=float, nargs="+", default=None,
                    help="diameters to report N(>=D) at (default: sqrt(2) bins holding craters)")
    sp.add_argument("--run", default=None, help="only this detection run")
    common(sp, geo=False)

    sp = sub.add_parser("ages", help="counts and mean class probabilities per age class in a region")
    region(sp)
    sp.add_argument("--age-run", default=None, help="only this age run (default: every age run, separately)")
    common(sp, geo=False)

    sp = sub.add_parser("new", help="craters of a run with no match in a reference catalogue (the evaluator's rule)")
    sp.add_argument("--run", required=True, help="detection run")
    sp.add_argument("--catalogue", required=True, help="reference catalogue name")
    common(sp)

    sp = sub.add_parser("runs", help="detection and age runs in the database, with provenance")
    common(sp, geo=False)
    return p


def _region_arg(args):
    from atlas_db.queries import box_wkt

    if getattr(args, "lon_min", None) is not None:
        missing = [n for n in ("lat_min", "lon_max", "lat_max") if getattr(args, n) is None]
        if missing:
            raise SystemExit(f"deepcraters query: a box needs {', '.join('--' + m.replace('_', '-') for m in missing)}")
        return box_wkt(args.lon_min, args.lat_min, args.lon_max, args.lat_max)
    return _read_region(args)


def _run_query(conn, args) -> pd.DataFrame:
    from atlas_db import queries as Q

    q = args.query
    if q == "radius":
        return Q.craters_within(conn, args.lon, args.lat, args.radius_km, run=args.run)
    if q == "nearest":
        return Q.nearest_craters(conn, args.lon, args.lat, k=args.k, run=args.run)
    if q == "box":
        return Q.craters_in_box(conn, args.lon_min, args.lat_min, args.lon_max, args.lat_max, run=args.run)
    if q == "polygon":
        return Q.craters_in_polygon(conn, _read_region(args), run=args.run)
    if q == "sfd":
        return Q.size_frequency(conn, _region_arg(args), diameters_km=args.diameters_km, run=args.run)
    if q == "ages":
        return Q.age_class_summary(conn, _region_arg(args), age_run=args.age_run)
    if q == "new":
        return Q.new_craters(conn, args.run, args.catalogue)
    if q == "runs":
        return Q.run_list(conn)
    raise AssertionError(q)


def to_geojson(df: pd.DataFrame) -> str:
    """Rows with lon/lat as a GeoJSON FeatureCollection of points (other columns as properties)."""
    feats = []
    for rec in df.to_dict(orient="records"):
        props = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                 for k, v in rec.items() if k not in ("lon", "lat")}
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [rec["lon"], rec["lat"]]},
                      "properties": props})
    return json.dumps({"type": "FeatureCollection", "features": feats}, default=str)


def _render(df: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "geojson":
        return to_geojson(df) + "\n"
    return (df.to_string(index=False) if len(df) else "(no rows)") + "\n"


def main(argv: list[str] | None = None) -> int:
    """``deepcraters query``."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from atlas_db.engine import get_engine, safe_url

    args = build_parser().parse_args(argv)
    engine = get_engine(args.db)
    try:
        with engine.connect() as conn:
            df = _run_query(conn, args)
    except ValueError as exc:
        print(f"deepcraters query: {exc}", file=sys.stderr)
        return 2
    except (OperationalError, ProgrammingError) as exc:
        print(f"deepcraters query: database error at {safe_url(engine.url)}: {exc.orig}".rstrip(), file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    out = _render(df, args.format)
    if args.output:
        Path(args.output).write_text(out)
        print(f"{len(df)} rows -> {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out)
    return 0
