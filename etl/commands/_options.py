"""Options shared by several subcommands, each defined once."""
from __future__ import annotations

import argparse

DB_HELP = ("database URL (default: $DATABASE_URL, else postgresql://postgres@localhost:5432/deepcraters); "
           "keep passwords in ~/.pgpass or the environment")


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """``--db URL``: the atlas database (``atlas_db.engine.database_url`` resolves the default)."""
    parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)
