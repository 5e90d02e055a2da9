"""``deepcraters db``: create or migrate the atlas schema, and manage its read-only role.

The database URL comes from ``--db``, else ``DATABASE_URL``, else the local default;
passwords come from the environment and are never printed.
"""
from __future__ import annotations

import argparse
import os
import sys

from etl.commands._options import add_db_option


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters db",
        description="Create or migrate the atlas schema (tables via Alembic, then SQL functions and views), "
                    "and manage the read-only role for query users.",
        epilog="examples:\n"
               "  deepcraters db upgrade\n"
               "  READER_PW=... deepcraters db roles --reader deepcraters_reader --password-env READER_PW",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    sp = sub.add_parser("upgrade", help="create the database if needed and migrate it to the latest schema")
    add_db_option(sp)
    sp.add_argument("--revision", default="head", help="Alembic revision to reach (default: head)")
    sp = sub.add_parser("roles", help="create/refresh a login role that may SELECT the atlas views and nothing else")
    add_db_option(sp)
    sp.add_argument("--reader", default=None, help="role name (default: deepcraters_reader)")
    sp.add_argument("--password-env", default=None, metavar="VAR",
                    help="set the role's password from this environment variable (never from the command line)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``deepcraters db``."""
    from atlas_db.engine import database_url, describe_database_error, safe_url

    args = build_parser().parse_args(argv)
    url = database_url(args.db)
    try:
        return _run(args, url)
    except Exception as exc:  # a database failure is a message; anything else is a bug: raise it
        detail = describe_database_error(exc)
        if detail is None:
            raise
        # Each action's work is one transaction: it did not commit, so the server rolled it back.
        print(f"deepcraters db {args.action}: database error at {safe_url(url)}: {detail} "
              "(its transaction did not commit: nothing of it was written)", file=sys.stderr)
        return 1


def _run(args, url: str) -> int:
    from atlas_db.engine import get_engine, safe_url

    if args.action == "upgrade":
        from atlas_db.migrate import upgrade

        try:
            rev = upgrade(url, args.revision)
        except RuntimeError as exc:
            print(f"deepcraters db upgrade: {exc}", file=sys.stderr)
            return 1
        print(f"{safe_url(url)} is at revision {rev}")
        return 0
    from atlas_db.views import READER_ROLE, ensure_reader_role

    role = args.reader or READER_ROLE
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            print(f"deepcraters db roles: environment variable {args.password_env} is not set", file=sys.stderr)
            return 2
    engine = get_engine(url)
    try:
        with engine.begin() as conn:
            ensure_reader_role(conn, role, password)
    finally:
        engine.dispose()
    print(f"role {role!r} may read the atlas views in {safe_url(url)}")
    return 0
