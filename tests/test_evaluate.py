"""`deepcraters evaluate`: an atlas scored against a reference catalogue under the project's and
DeepMoon's matching rules (etl.matching), with the completeness limit and the region."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from etl.evaluation import Region, cumulative_sfd, evaluate_atlas
from etl.matching import DEEPMOON_RULE, PROJECT_RULE, STRICT_RULE, match_one_to_one
from etl.moon import MOON_RADIUS_KM


def _catalogue(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    # Spread out (>= ~60 km apart on a 6 x 6 degree grid) so no two craters can be confused.
    lon = np.repeat(np.arange(-170.0, -50.0, 6.0), 20)[:n] + rng.uniform(-1, 1, n)
    lat = np.tile(np.arange(-57.0, 60.0, 6.0), 20)[:n] + rng.uniform(-1, 1, n)
    return pd.DataFrame({"lon": lon, "lat": lat, "diameter_km": 10 * 2 ** rng.uniform(0, 3, n)})


def test_deepmoon_rule_is_silburts_in_radii():
    # (distance / r_min)^2 < 1.8 and |r1 - r2| / r_min < 1.0, strictly.
    r = 5.0
    assert DEEPMOON_RULE.is_match_distance(np.sqrt(1.8) * r - 1e-9, 2 * r, 2 * r)
    assert not DEEPMOON_RULE.is_match_distance(np.sqrt(1.8) * r, 2 * r, 2 * r)
    assert DEEPMOON_RULE.is_match_distance(0.0, 10.0, 19.99) and not DEEPMOON_RULE.is_match_distance(0.0, 10.0, 20.0)
    # The distance is relative to the smaller crater under DeepMoon, the larger under the project's rule.
    assert PROJECT_RULE.is_match_distance(7.0, 10.0, 14.0) and not DEEPMOON_RULE.is_match_distance(7.0, 10.0, 14.0)
    assert not STRICT_RULE.is_match_distance(3.0, 10.0, 10.0) and STRICT_RULE.is_match_distance(2.5, 10.0, 10.0)


def test_a_catalogue_against_itself_is_perfect(tmp_path):
    from etl.cli import main

    cat = _catalogue()
    cat.to_csv(tmp_path / "cat.csv", index=False)
    rc = main(["evaluate", str(tmp_path / "cat.csv"), str(tmp_path / "cat.csv"), "--min-diameter-km", "20",
               "--sfd", str(tmp_path / "sfd.png"), "--json", str(tmp_path / "res.json")])
    assert rc == 0
    res = json.loads((tmp_path / "res.json").read_text())
    n = int((cat.diameter_km >= 20).sum())
    for rule in ("project", "deepmoon"):
        m = res["rules"][rule]
        assert (m["precision"], m["recall"], m["f1"]) == (1.0, 1.0, 1.0)
        assert m["num_reference"] == n and m["true_positives"] == n
        assert m["median_centre_error_frac"] == 0.0 and m["median_abs_diameter_error_frac"] == 0.0
        assert sum(b["num_reference"] for b in m["bins"]) == n
    assert (tmp_path / "sfd.png").stat().st_size > 10_000


def test_misses_false_positives_offsets_and_the_completeness_limit():
    ref = _catalogue()
    atlas = ref.copy()
    atlas["score"] = 0.9
    # Each crater moved east by 0.4 of its diameter: a match for the project's rule (<= 0.5 D)
    # and DeepMoon's (< 0.67 D), not for the strict one (<= 0.25 D).
    atlas["lon"] = ref.lon + np.degrees(0.4 * ref.diameter_km / MOON_RADIUS_KM / np.cos(np.radians(ref.lat)))
    # Drop a quarter (misses), add craters far from any (false positives), one small (unlabelled).
    atlas = atlas.iloc[100:]
    extra = pd.DataFrame({"lon": [-175.0, -176.0, -177.5], "lat": [75.0, 75.0, 75.0],
                          "diameter_km": [30.0, 40.0, 5.0], "score": [0.3, 0.3, 0.3]})
    atlas = pd.concat([atlas, extra], ignore_index=True)
    region = Region(-180, -80, 0, 80)
    res = evaluate_atlas(atlas, ref, region=region, min_diameter_km=10.0, rules=("project", "deepmoon", "strict"))
    n_ref = len(ref)
    for rule in ("project", "deepmoon"):
        m = res["rules"][rule]
        assert m["true_positives"] == 300 and m["num_reference"] == n_ref
        assert m["recall"] == pytest.approx(300 / n_ref)
        assert m["num_atlas"] == 302  # the 5 km crater is under the completeness limit: not counted
        assert m["precision"] == pytest.approx(300 / 302)
        assert m["median_centre_error_frac"] == pytest.approx(0.4, rel=1e-3)
        # The false positives score lowest: above their score, precision is perfect.
        assert m["recall_at_precision_0.9"] == pytest.approx(300 / n_ref)
    assert res["rules"]["strict"]["true_positives"] == 0
    # Outside the region nothing counts.
    res = evaluate_atlas(atlas, ref, region=Region(-180, -80, -120, 80), min_diameter_km=10.0)
    assert res["rules"]["project"]["num_atlas"] < 302


def test_one_to_one_matching_gives_each_reference_crater_to_one_detection():
    ref_lon, ref_lat, ref_d = [0.0], [0.0], [20.0]
    match = match_one_to_one([0.0, 0.01], [0.0, 0.0], [20.0, 20.0], [0.5, 0.9], ref_lon, ref_lat, ref_d)
    assert match.tolist() == [-1, 0]  # the higher score takes it


def test_region_area_and_sfd_are_per_km2():
    whole = Region(-180, -90, 180, 90)
    assert whole.area_km2() == pytest.approx(4 * np.pi * MOON_RADIUS_KM ** 2)
    across = Region(170, -10, -170, 10)  # crosses the antimeridian
    assert across.contains([175, -175, 0], [0, 0, 0]).tolist() == [True, True, False]
    assert across.area_km2() == pytest.approx(Region(-10, -10, 10, 10).area_km2())
    d, n = cumulative_sfd([10, 40, 20], 100.0)
    assert d.tolist() == [40, 20, 10] and n.tolist() == [0.01, 0.02, 0.03]


def test_the_symmetric_boundary_leaves_detections_that_may_be_small_craters_unlabelled():
    from etl.evaluation import unlabelled_below_km

    # One catalogued 30 km crater, found; three detections matching nothing, of 22, 28 and 45 km.
    ref = pd.DataFrame({"lon": [-100.0], "lat": [0.0], "diameter_km": [30.0]})
    atlas = pd.DataFrame({"lon": [-100.0, -90.0, -80.0, -70.0], "lat": [0.0, 0.0, 0.0, 0.0],
                          "diameter_km": [31.0, 22.0, 28.0, 45.0], "score": [0.9, 0.8, 0.7, 0.6]})
    region = Region(-120, -10, -60, 10)
    rules = ("strict", "project", "deepmoon")
    old = evaluate_atlas(atlas, ref, region=region, min_diameter_km=20.0, rules=rules)
    new = evaluate_atlas(atlas, ref, region=region, min_diameter_km=20.0, rules=rules, boundary="symmetric")
    for rule in rules:
        # "detected": every unmatched detection >= 20 km is a false positive.
        assert old["rules"][rule]["num_atlas"] == 4 and old["rules"][rule]["false_positive_from_km"] == 20.0
        assert old["rules"][rule]["true_positives"] == new["rules"][rule]["true_positives"] == 1
        # "symmetric": a 22 km detection may be a 17.6-20 km crater measured large (1.25x): unlabelled.
        assert new["rules"][rule]["false_positive_from_km"] == 25.0
        assert new["rules"][rule]["num_atlas"] == 3  # 31 (hit), 28 and 45 (false positives)
        assert new["rules"][rule]["precision"] == pytest.approx(1 / 3)
    # Never wider than the rule's own tolerance; a wider band only when asked.
    narrow = STRICT_RULE.__class__("narrow", 0.25, 1.1)
    assert unlabelled_below_km(20.0, narrow, "symmetric") == pytest.approx(22.0)
    assert unlabelled_below_km(20.0, DEEPMOON_RULE, "symmetric", boundary_ratio=2.0) == 40.0
    assert unlabelled_below_km(20.0, PROJECT_RULE) == 20.0
    with pytest.raises(ValueError, match="boundary"):
        evaluate_atlas(atlas, ref, region=region, min_diameter_km=20.0, boundary="lenient")


def test_evaluate_command_takes_the_boundary(tmp_path):
    from etl.cli import main

    cat = _catalogue()
    cat.to_csv(tmp_path / "cat.csv", index=False)
    assert main(["evaluate", str(tmp_path / "cat.csv"), str(tmp_path / "cat.csv"), "--min-diameter-km", "20",
                 "--boundary", "symmetric", "--json", str(tmp_path / "res.json")]) == 0
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["boundary"] == "symmetric" and res["rules"]["project"]["false_positive_from_km"] == 25.0
    assert res["rules"]["project"]["f1"] == 1.0
