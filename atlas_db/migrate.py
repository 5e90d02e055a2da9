"""Bring a database to the current schema: Alembic migrations (tables, indexes), then the
repeatable objects (SQL functions, views), all in one transaction."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from atlas_db.engine import ensure_database, get_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Serialises concurrent upgrades of one database (arbitrary constant key: "DCRA").
_UPGRADE_LOCK_KEY = 0x44435241


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> str:
    """Create the database if needed and migrate it to ``revision``; returns the revision reached.
    The SQL functions and views are (re)created only at the head revision, whose columns they read."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from atlas_db.srs import check_moon_srid, install_functions
    from atlas_db.views import install_views

    ensure_database(url)
    engine = get_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _UPGRADE_LOCK_KEY})
            check_moon_srid(conn)
            cfg = alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            reached = MigrationContext.configure(conn).get_current_revision() or "base"
            if reached != ScriptDirectory.from_config(cfg).get_current_head():
                return reached  # the functions and views are head's: they may read columns not there yet
            install_functions(conn)
            install_views(conn)
            # Atlas queries are short: JIT compilation costs 50+ ms each time and never pays back.
            db = conn.execute(text("SELECT current_database()")).scalar()
            conn.exec_driver_sql(f"ALTER DATABASE {conn.dialect.identifier_preparer.quote(db)} SET jit = off")
            return MigrationContext.configure(conn).get_current_revision() or "base"
    finally:
        engine.dispose()
