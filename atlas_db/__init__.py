"""atlas_db: the PostGIS schema, engine, migrations and spatial queries of the crater atlas (no torch)."""
