"""``deepcraters load``: validate atlas / age / reference files completely, then load each into
the PostGIS atlas in one transaction (``etl.load``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etl.commands._options import add_db_option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters load",
        description="Validate atlas / age / reference-catalogue files completely, then load them into the "
                    "PostGIS atlas in one transaction per file. Re-running a load changes nothing; a file "
                    "with any bad row writes nothing and every problem is reported with file, row and field. "
                    "Run 'deepcraters db upgrade' once first.",
        epilog="examples:\n"
               "  deepcraters load atlas out/atlas.gpkg\n"
               "  deepcraters load ages out/ages.parquet\n"
               "  deepcraters load reference robbins2018.csv --name robbins2018\n"
               "files: .gpkg, .parquet or .csv (CSV provenance in <file>.provenance.json); see etl/contracts.py",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["atlas", "ages", "reference"],
                   help="atlas: detections of one run; ages: age-network output over an atlas run; "
                        "reference: a published catalogue (lon, lat, diameter_km[, ref_id])")
    p.add_argument("files", nargs="+", type=Path, help="files to load, each in its own transaction")
    add_db_option(p)
    p.add_argument("--name", default=None, help="reference catalogue name (required for 'reference')")
    p.add_argument("--source", default=None, help="reference catalogue citation / origin (optional)")
    p.add_argument("--replace", action="store_true",
                   help="let a file replace a stored run even when that deletes most of its rows (without it "
                        "such a load is refused and writes nothing: a header-only or truncated file looks like that)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    from atlas_db.engine import database_url, describe_database_error, safe_url
    from etl.contracts import ContractError
    from etl.load import load_ages, load_atlas, load_reference

    args = build_parser().parse_args(argv)
    if args.kind == "reference" and not args.name:
        print("deepcraters load reference: --name is required", file=sys.stderr)
        return 2
    status = 0
    for path in args.files:
        try:
            if args.kind == "atlas":
                result = load_atlas(path, args.db, progress=not args.quiet, replace=args.replace)
            elif args.kind == "ages":
                result = load_ages(path, args.db, progress=not args.quiet, replace=args.replace)
            else:
                result = load_reference(path, args.name, args.db, source_text=args.source, progress=not args.quiet,
                                        replace=args.replace)
        except ContractError as exc:
            print(f"{path}: not loaded, nothing written. {exc}", file=sys.stderr)
            status = 1
            continue
        except (FileNotFoundError, RuntimeError, ValueError) as exc:
            print(f"{path}: not loaded: {exc}", file=sys.stderr)
            status = 1
            continue
        except Exception as exc:  # a database failure is a message; anything else is a bug: raise it
            detail = describe_database_error(exc)
            if detail is None:
                raise
            # The load's one transaction did not commit, so the server rolled all of it back.
            print(f"{path}: not loaded, nothing written: database error at {safe_url(database_url(args.db))}: "
                  f"{detail}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}: {result.summary()}")
    return status
