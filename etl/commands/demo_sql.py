"""The demo's last step: load the atlas and the study area's catalogue into PostGIS and
show what SQL gives a scientist (the same functions as ``deepcraters query``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def _show(title: str, df: pd.DataFrame, rows: int = 8) -> None:
    print(f"\n-- {title}")
    print(df.head(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(df) else "(none)")


def load_and_query(url: str | None, atlas_path: Path, catalogue_path: Path, run_name: str,
                   center_lon_lat: tuple[float, float]) -> None:
    from atlas_db.engine import ensure_database, get_engine, safe_url
    from atlas_db.migrate import upgrade
    from atlas_db import queries
    from etl.load import load_atlas, load_reference

    ensure_database(url)
    upgrade(url)
    reference = "synthetic-truth"
    # replace: the demo's run and catalogue are what this demo just made, even when a retrained
    # model maps other craters than a previous demo stored under the same run name.
    for result in (load_atlas(atlas_path, url, replace=True),
                   load_reference(catalogue_path, reference, url, source_text="the demo's synthetic catalogue",
                                  replace=True)):
        print(f"   {result.summary()}")
    lon, lat = center_lon_lat
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            print(f"   database: {safe_url(engine.url)}")
            _show(f"5 craters nearest to ({lon}, {lat})", queries.nearest_craters(conn, lon, lat, k=5, run=run_name))
            within = queries.craters_within(conn, lon, lat, 20.0, run=run_name)
            print(f"\n-- {len(within)} craters within 20 km of ({lon}, {lat})")
            region = queries.box_wkt(lon - 2, lat - 2, lon + 2, lat + 2)
            sfd = queries.size_frequency(conn, region, run=run_name)
            # Bins below the smallest crater all repeat the total: show from the last of them.
            first = max(int((sfd["n_cumulative"] == sfd["n_cumulative"].max()).sum()) - 1, 0) if len(sfd) else 0
            _show("size-frequency distribution of a 4 x 4 degree box (craters >= D, per km^2)",
                  sfd.iloc[first:], rows=12)
            new = queries.new_craters(conn, run_name, reference)
            print(f"\n-- {len(new)} atlas craters have no match in '{reference}' (the original work's 'new' "
                  f"craters; on a synthetic world these are false positives or craters below its listing threshold)")
    finally:
        engine.dispose()
    print("\n   try: deepcraters query --help")
