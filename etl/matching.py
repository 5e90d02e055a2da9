"""When a detected crater and a catalogued crater are "the same crater": the one rule.

The detector's evaluator (recall/precision against a catalogue) and the atlas
database ("new" craters = atlas craters with no catalogue match) both read these
constants, so a crater counted as new in SQL is exactly one the evaluator would
count as a false positive against the same catalogue.

Rule: two craters match when
  * their centres are at most ``MATCH_MAX_CENTRE_DISTANCE_FRAC`` x the larger
    diameter apart (great-circle distance on the lunar sphere), and
  * the larger diameter is at most ``MATCH_MAX_DIAMETER_RATIO`` x the smaller.
"""
from __future__ import annotations

import numpy as np

from etl.moon import MOON_RADIUS_M, chord_for_distance, great_circle_distance_m, unit_vector

#: Centres closer than this fraction of the larger diameter may match (0.5: the
#: other centre lies inside the larger crater's rim).
MATCH_MAX_CENTRE_DISTANCE_FRAC: float = 0.5
#: Diameters may differ by at most this factor (1.5: a crater and one half as
#: large again are still "the same" detection; beyond that it is a neighbour).
MATCH_MAX_DIAMETER_RATIO: float = 1.5


def is_match(lon1_deg, lat1_deg, diameter1_km, lon2_deg, lat2_deg, diameter2_km):
    """Whether crater 1 and crater 2 match under the rule above (numpy arrays broadcast)."""
    d1 = np.asarray(diameter1_km, dtype=float)
    d2 = np.asarray(diameter2_km, dtype=float)
    big, small = np.maximum(d1, d2), np.minimum(d1, d2)
    dist_km = great_circle_distance_m(lon1_deg, lat1_deg, lon2_deg, lat2_deg) / 1000.0
    return (dist_km <= MATCH_MAX_CENTRE_DISTANCE_FRAC * big) & (big <= MATCH_MAX_DIAMETER_RATIO * small)


def max_match_distance_km(diameter_km):
    """Largest centre distance at which a crater of ``diameter_km`` can match anything: its
    partner is at most ``MATCH_MAX_DIAMETER_RATIO`` times larger. Used to bound index searches."""
    return MATCH_MAX_CENTRE_DISTANCE_FRAC * MATCH_MAX_DIAMETER_RATIO * np.asarray(diameter_km, dtype=float)


def has_match(lon_deg, lat_deg, diameter_km, ref_lon_deg, ref_lat_deg, ref_diameter_km) -> np.ndarray:
    """For each crater, whether at least one reference crater matches it (boolean array).

    Searches a k-d tree on unit-sphere vectors with the chord of each crater's
    largest possible match distance, then applies ``is_match`` exactly."""
    from scipy.spatial import cKDTree

    lon, lat, diam = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (lon_deg, lat_deg, diameter_km))
    rlon, rlat, rdiam = (np.atleast_1d(np.asarray(v, dtype=float)) for v in
                         (ref_lon_deg, ref_lat_deg, ref_diameter_km))
    out = np.zeros(len(lon), dtype=bool)
    if len(rlon) == 0 or len(lon) == 0:
        return out
    tree = cKDTree(unit_vector(rlon, rlat))
    xyz = unit_vector(lon, lat)
    # A hair of slack so that float rounding in the chord never hides a true match;
    # is_match below decides exactly.
    radii = np.array([chord_for_distance(r * 1000.0, MOON_RADIUS_M) for r in max_match_distance_km(diam)]) * (1 + 1e-9)
    for i, cand in enumerate(tree.query_ball_point(xyz, radii)):
        if cand:
            cand = np.asarray(cand)
            out[i] = bool(np.any(is_match(lon[i], lat[i], diam[i], rlon[cand], rlat[cand], rdiam[cand])))
    return out
