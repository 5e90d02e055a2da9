"""Engine and session factory. The URL comes from the caller, ``DATABASE_URL`` or the
default local server; credentials are never printed (URLs are shown with the password hidden)."""
from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/deepcraters"


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else ``DATABASE_URL``, else the local default."""
    return url or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


def safe_url(url: str | URL) -> str:
    """URL text fit for messages and logs (password masked)."""
    return make_url(url).render_as_string(hide_password=True)


def describe_database_error(exc: BaseException) -> str | None:
    """A database failure in one line: the driver's own words for no server, a dropped
    connection, a killed backend or an error the server raised. None when ``exc`` is not a
    database error (the caller re-raises it)."""
    import psycopg2
    from sqlalchemy.exc import SQLAlchemyError

    if not isinstance(exc, (SQLAlchemyError, psycopg2.Error)):
        return None
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines()
             if ln.strip() and not ln.strip().startswith("(Background on this error")]
    return "; ".join(lines) or type(orig).__name__


def get_engine(url: str | None = None, **kwargs) -> Engine:
    return create_engine(_driver_url(database_url(url)), future=True, **kwargs)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


def _driver_url(url: str) -> URL:
    u = make_url(url)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg2")
    return u


def ensure_database(url: str | None = None) -> None:
    """Create the database named in ``url`` if it does not exist, and the postgis extension in it.

    Raises ``RuntimeError`` naming the (masked) URL when no server answers."""
    from sqlalchemy.exc import OperationalError

    u = _driver_url(database_url(url))
    admin = create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": u.database}).scalar()
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(u.database)
                conn.execute(text(f"CREATE DATABASE {quoted}"))
    except OperationalError as exc:
        raise RuntimeError(
            f"no PostgreSQL server answers at {safe_url(u)}: start one with 'make db' "
            f"or set DATABASE_URL ({exc.orig.__class__.__name__})"
        ) from None
    finally:
        admin.dispose()
    eng = create_engine(u, isolation_level="AUTOCOMMIT")
    try:
        with eng.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS postgis"))
            # Optional: pg_prewarm (PostgreSQL's contrib) lets a load leave what it wrote in the
            # buffer cache (atlas_db.bulk.prewarm). Where the server lacks it, or the role may
            # not create it (it needs a superuser), loads skip that step.
            conn.execute(text(
                "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_prewarm') THEN "
                "CREATE EXTENSION IF NOT EXISTS pg_prewarm; END IF; "
                "EXCEPTION WHEN insufficient_privilege THEN NULL; END $$"))
    finally:
        eng.dispose()
