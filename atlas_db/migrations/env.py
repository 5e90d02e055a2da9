"""Alembic environment: runs on a connection handed over by atlas_db.migrate (or on the
URL from the Alembic config / DATABASE_URL), with GeoAlchemy2's helpers so that
autogenerate renders geometry columns and skips PostGIS' own tables."""
from alembic import context
from geoalchemy2 import alembic_helpers

from atlas_db.engine import get_engine
from atlas_db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=alembic_helpers.include_object,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = get_engine(config.get_main_option("sqlalchemy.url") or None)
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run 'deepcraters db upgrade'")
run_migrations_online()
