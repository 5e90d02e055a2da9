"""Shared fixtures. The database is a real PostGIS server: its URL comes from
``--database-url`` or ``DATABASE_URL`` (default: the local server's ``deepcraters_test``).
A missing database is an error, never a skip."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@localhost:5432/deepcraters_test"


def pytest_addoption(parser):
    parser.addoption("--database-url", default=None, help="PostGIS URL for database tests")


@pytest.fixture(scope="session")
def database_url(request) -> str:
    """URL of a PostGIS database for tests, created (with the postgis extension) if missing."""
    from atlas_db.engine import ensure_database

    url = request.config.getoption("--database-url") or os.environ.get("TEST_DATABASE_URL") \
        or os.environ.get("DATABASE_URL") or DEFAULT_TEST_DATABASE_URL
    ensure_database(url)  # raises with a clear message when no server answers
    return url


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
