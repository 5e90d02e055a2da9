"""The demo's database step (``etl.commands.demo_sql``) on the real PostGIS: it loads an atlas
and a catalogue and its "new craters" count is exactly the atlas craters the catalogue lacks."""
from __future__ import annotations

import uuid

import numpy as np
import pandas as pd

from atlas_db.synthetic import atlas_provenance, synthetic_atlas
from etl.commands.demo_sql import load_and_query
from etl.contracts import write_atlas


def test_demo_loads_and_queries_and_counts_new_craters(atlas_url, tmp_path, capsys):
    rng = np.random.default_rng(4)
    n_listed, n_new = 200, 7
    lon = rng.uniform(18.0, 22.0, n_listed + n_new)
    lat = rng.uniform(-12.0, -8.0, n_listed + n_new)
    diameter = rng.uniform(2.0, 15.0, n_listed + n_new)
    # Far apart from every listed crater: each extra stays unmatched whatever its neighbours.
    lon[n_listed:], lat[n_listed:] = np.linspace(30.0, 40.0, n_new), -10.0
    catalogue = pd.DataFrame({"lon": lon[:n_listed], "lat": lat[:n_listed], "diameter_km": diameter[:n_listed]})
    catalogue.to_csv(tmp_path / "catalogue.csv", index=False)
    run = f"demo-{uuid.uuid4().hex[:8]}"
    atlas = synthetic_atlas(n_listed + n_new, run, seed=4,
                            catalogue=pd.DataFrame({"lon": lon, "lat": lat, "diameter_km": diameter}))
    write_atlas(atlas, tmp_path / "atlas.gpkg", atlas_provenance(run))

    load_and_query(atlas_url, tmp_path / "atlas.gpkg", tmp_path / "catalogue.csv", run, (20.0, -10.0))
    out = capsys.readouterr().out
    assert f"atlas {run!r}: {n_listed + n_new} rows" in out
    assert "5 craters nearest to (20.0, -10.0)" in out and "size-frequency distribution" in out
    assert f"-- {n_new} atlas craters have no match in 'synthetic-truth'" in out
