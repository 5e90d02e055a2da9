"""When a detected crater and a catalogued crater are "the same crater": the one rule.

The detector's evaluator (recall/precision against a catalogue) and the atlas
database ("new" craters = atlas craters with no catalogue match) both read these
constants, so a crater counted as new in SQL is exactly one the evaluator would
count as a false positive against the same catalogue.

Rule: two craters match when
  * their centres are at most ``MATCH_MAX_CENTRE_DISTANCE_FRAC`` x the larger
    diameter apart (great-circle distance on the lunar sphere), and
  * the larger diameter is at most ``MATCH_MAX_DIAMETER_RATIO`` x the smaller.

Other rules, for comparison with published results (``MatchRule``; ``RULES`` by name): the
DeepMoon rule (Silburt et al. 2019, Icarus 317: a detection matches a catalogue crater when
(distance / r_min)^2 < 1.8 and |r1 - r2| / r_min < 1.0, r_min the smaller radius: centres
within 0.67 x the smaller diameter, diameters within 2x) and a strict rule (centres within a
quarter of the larger diameter, diameters within 1.25x).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from etl.moon import MOON_RADIUS_M, chord_for_distance, great_circle_distance_m, unit_vector

#: Centres closer than this fraction of the larger diameter may match (0.5: the
#: other centre lies inside the larger crater's rim).
MATCH_MAX_CENTRE_DISTANCE_FRAC: float = 0.5
#: Diameters may differ by at most this factor (1.5: a crater and one half as
#: large again are still "the same" detection; beyond that it is a neighbour).
MATCH_MAX_DIAMETER_RATIO: float = 1.5


@dataclass(frozen=True)
class MatchRule:
    """Two craters match when their centres are at most ``max_centre_distance_frac`` x the
    ``distance_relative_to`` ("larger" or "smaller") diameter apart and the larger diameter is at
    most ``max_diameter_ratio`` x the smaller. ``strict_bounds``: both limits exclusive (<)."""

    name: str
    max_centre_distance_frac: float
    max_diameter_ratio: float
    distance_relative_to: str = "larger"
    strict_bounds: bool = False

    def __post_init__(self):
        if self.distance_relative_to not in ("larger", "smaller"):
            raise ValueError(f"distance_relative_to must be 'larger' or 'smaller', got {self.distance_relative_to!r}")

    def is_match_distance(self, distance, diameter1, diameter2):
        """The rule on a centre distance and two diameters (any one length unit; arrays broadcast)."""
        d1, d2 = np.asarray(diameter1, dtype=float), np.asarray(diameter2, dtype=float)
        big, small = np.maximum(d1, d2), np.minimum(d1, d2)
        ref = big if self.distance_relative_to == "larger" else small
        dist = np.asarray(distance, dtype=float)
        if self.strict_bounds:
            return (dist < self.max_centre_distance_frac * ref) & (big < self.max_diameter_ratio * small)
        return (dist <= self.max_centre_distance_frac * ref) & (big <= self.max_diameter_ratio * small)

    def max_distance(self, diameter):
        """Largest centre distance at which a crater of ``diameter`` can match anything."""
        d = np.asarray(diameter, dtype=float)
        scale = self.max_diameter_ratio if self.distance_relative_to == "larger" else 1.0
        return self.max_centre_distance_frac * scale * d


#: The project's rule (module docstring).
PROJECT_RULE = MatchRule("project", MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO)
#: DeepMoon's (Silburt et al. 2019, template_match_t2c with D_xy = 1.8, D_r = 1.0): in radii,
#: (distance / r_min)^2 < 1.8 and |r1 - r2| / r_min < 1.0.
DEEPMOON_RULE = MatchRule("deepmoon", float(np.sqrt(1.8)) / 2.0, 2.0, distance_relative_to="smaller",
                          strict_bounds=True)
#: Strict: centres within D/4 of the larger diameter, diameters within 1.25x.
STRICT_RULE = MatchRule("strict", 0.25, 1.25)
RULES: dict[str, MatchRule] = {r.name: r for r in (PROJECT_RULE, DEEPMOON_RULE, STRICT_RULE)}


def is_match(lon1_deg, lat1_deg, diameter1_km, lon2_deg, lat2_deg, diameter2_km, rule: MatchRule = PROJECT_RULE):
    """Whether crater 1 and crater 2 match under ``rule`` (numpy arrays broadcast)."""
    dist_km = great_circle_distance_m(lon1_deg, lat1_deg, lon2_deg, lat2_deg) / 1000.0
    return rule.is_match_distance(dist_km, diameter1_km, diameter2_km)


def max_match_distance_km(diameter_km, rule: MatchRule = PROJECT_RULE):
    """Largest centre distance at which a crater of ``diameter_km`` can match anything under
    ``rule``. Used to bound index searches."""
    return rule.max_distance(diameter_km)


def _candidates(lon, lat, diam, rlon, rlat, rule: MatchRule):
    """For each crater, the indices of reference craters within its largest match distance."""
    from scipy.spatial import cKDTree

    tree = cKDTree(unit_vector(rlon, rlat))
    # A hair of slack so that float rounding in the chord never hides a true match;
    # the rule decides exactly.
    radii = np.array([chord_for_distance(r * 1000.0, MOON_RADIUS_M)
                      for r in max_match_distance_km(diam, rule)]) * (1 + 1e-9)
    return tree.query_ball_point(unit_vector(lon, lat), radii)


def match_one_to_one(lon_deg, lat_deg, diameter_km, score, ref_lon_deg, ref_lat_deg, ref_diameter_km,
                     rule: MatchRule = PROJECT_RULE) -> np.ndarray:
    """Greedy one-to-one matching of detections to reference craters (the evaluator's way):
    detections in descending score, each to the nearest still unmatched reference crater that
    ``rule`` matches. Returns, per detection in input order, its reference index or -1."""
    lon, lat, diam = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (lon_deg, lat_deg, diameter_km))
    rlon, rlat, rdiam = (np.atleast_1d(np.asarray(v, dtype=float)) for v in
                         (ref_lon_deg, ref_lat_deg, ref_diameter_km))
    out = np.full(len(lon), -1, dtype=np.int64)
    if len(rlon) == 0 or len(lon) == 0:
        return out
    cands = _candidates(lon, lat, diam, rlon, rlat, rule)
    taken = np.zeros(len(rlon), dtype=bool)
    for i in np.argsort(-np.asarray(score, dtype=float), kind="stable"):
        c = np.asarray([j for j in cands[i] if not taken[j]], dtype=np.int64)
        if len(c) == 0:
            continue
        dist_km = great_circle_distance_m(lon[i], lat[i], rlon[c], rlat[c]) / 1000.0
        ok = rule.is_match_distance(dist_km, diam[i], rdiam[c])
        if ok.any():
            j = c[ok][np.argmin(dist_km[ok])]
            out[i] = j
            taken[j] = True
    return out


def has_match(lon_deg, lat_deg, diameter_km, ref_lon_deg, ref_lat_deg, ref_diameter_km,
              rule: MatchRule = PROJECT_RULE) -> np.ndarray:
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
    radii = np.array([chord_for_distance(r * 1000.0, MOON_RADIUS_M)
                      for r in max_match_distance_km(diam, rule)]) * (1 + 1e-9)
    for i, cand in enumerate(tree.query_ball_point(xyz, radii)):
        if cand:
            cand = np.asarray(cand)
            out[i] = bool(np.any(is_match(lon[i], lat[i], diam[i], rlon[cand], rlat[cand], rdiam[cand], rule)))
    return out
