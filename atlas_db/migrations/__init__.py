"""Alembic migrations of the atlas schema (shipped inside the package; run with ``deepcraters db upgrade``)."""
