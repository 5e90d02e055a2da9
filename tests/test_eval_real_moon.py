"""benchmarks/eval_age_real_moon.py: which atlas craters join Mean Teacher's unlabelled ones."""
from __future__ import annotations


import pandas as pd

from script_loader import load_script


def _script():
    return load_script("benchmarks/eval_age_real_moon.py")


def test_atlas_craters_that_match_no_head_crater_in_known_blocks_are_added(tmp_path):
    head = pd.DataFrame({"lon": [-10.0, -40.0], "lat": [5.0, -20.0], "diameter_km": [30.0, 60.0],
                         "age_class": ["Ic", None]})
    atlas = pd.DataFrame({
        # the labelled crater re-found (centre 0.1 deg ~ 3 km off, D 33 km), the unlabelled one re-found
        # (D 55 km), a new 15 km crater in the first crater's 15-degree block, one in a block without
        # Head craters, one in the east, and one too weak for --atlas-min-score.
        "lon": [-10.1, -40.0, -12.0, -100.0, 20.0, -11.0],
        "lat": [5.0, -20.1, 8.0, 50.0, 5.0, 2.0],
        "diameter_km": [33.0, 55.0, 15.0, 25.0, 30.0, 22.0],
        "score": [0.9, 0.8, 0.7, 0.9, 0.9, 0.1]})
    path = tmp_path / "atlas.csv"
    atlas.to_csv(path, index=False)
    added, counts = _script().atlas_unlabelled(path, head, block_deg=15.0, min_score=0.5)
    assert added[["lon", "lat", "diameter_km"]].values.tolist() == [[-12.0, 8.0, 15.0]]
    assert counts == {"atlas": 6, "west_above_score": 4, "matching_head2010": 2, "outside_head2010_blocks": 1,
                      "added": 1, "added_below_20_km": 1}


def test_context_parts_parse_all_none_and_refuse_unknown():
    import pytest

    module = _script()
    assert module.context_parts("none") == set()
    assert module.context_parts("all") == {"superposition", "basins", "rays"}
    assert module.context_parts("basins, rays") == {"basins", "rays"}
    with pytest.raises(SystemExit, match="unknown"):
        module.context_parts("superposition,moon")
