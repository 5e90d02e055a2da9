"""Shared fixtures. The database is a real PostGIS server: its URL comes from
``--database-url`` or ``TEST_DATABASE_URL`` (default: the local server's ``deepcraters_test``),
never from ``DATABASE_URL``, which may name a user's atlas. A missing database is an error,
never a skip.

Markers (setup.cfg): a test that uses a database fixture is marked ``db`` and one that uses
``shared_data`` ``real_data`` here, from its fixtures, so none escapes ``-m "not db"``;
``slow`` (> ~5 s) is marked by hand."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@localhost:5432/deepcraters_test"


def pytest_addoption(parser):
    parser.addoption("--database-url", default=None, help="PostGIS URL for database tests")


def resolve_test_database_url(option: str | None, environ: dict) -> str:
    """The test database's URL: the option, else ``TEST_DATABASE_URL``, else the default. Never
    ``DATABASE_URL``: tests create, write and delete runs, which must not land in a real atlas."""
    return option or environ.get("TEST_DATABASE_URL") or DEFAULT_TEST_DATABASE_URL


@pytest.fixture(scope="session")
def database_url(request) -> str:
    """URL of a PostGIS database for tests, created (with the postgis extension) if missing."""
    from atlas_db.engine import ensure_database

    url = resolve_test_database_url(request.config.getoption("--database-url"), os.environ)
    ensure_database(url)  # raises with a clear message when no server answers
    return url


DB_FIXTURES = {"database_url", "atlas_url", "atlas_engine"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & DB_FIXTURES:
            item.add_marker(pytest.mark.db)
        if "shared_data" in fixtures:
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real lunar data beside the project; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real lunar data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def atlas_url(database_url) -> str:
    """``database_url`` migrated to the atlas schema (idempotent; safe beside other sessions).

    Atlas tests share this database with whatever else runs, so each test uses its own run /
    catalogue names and never truncates tables."""
    from atlas_db.migrate import upgrade

    upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def atlas_engine(atlas_url):
    from atlas_db.engine import get_engine

    engine = get_engine(atlas_url)
    yield engine
    engine.dispose()
