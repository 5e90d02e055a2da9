"""An atlas scored against a reference catalogue, in lunar coordinates: precision, recall, F1,
location and diameter errors by diameter bin, under each matching rule of ``etl.matching``;
and the cumulative size-frequency distribution (SFD) of both.

What counts (as the detector's tile evaluator, ``detectron2_rfcn.evaluator``): reference craters
with centres in the region and diameters >= ``min_diameter_km`` (a catalogue's completeness
limit); an atlas crater in the region that matches none of them is a false positive unless it
is smaller than ``min_diameter_km`` or matches a reference crater below the limit (unlabelled,
not background). Matching is one-to-one and greedy by score (``etl.matching.match_one_to_one``).

The completeness boundary (``boundary``): a reference crater counts by its catalogued diameter
(>= the limit) and may be found by a detection of any size the rule accepts, so a 21 km crater
detected as 18 km is a hit. ``"detected"`` (the default) counts an unmatched detection as a false
positive whenever its own measured diameter is >= the limit, so an 18 km crater (uncatalogued)
measured as 21 km is a false positive: the boundary is not symmetric. ``"symmetric"`` gives the
detection side a diameter tolerance too: an unmatched detection is a false positive only when its
diameter is >= limit x ``boundary_ratio`` (``SYMMETRIC_BOUNDARY_RATIO``, 1.25: the strict rule's
diameter tolerance; 25 km for a 20 km limit), never more than the scoring rule's own
``max_diameter_ratio``; below that it may be a crater under the limit measured a little large, and
is unlabelled like one. Under the strict rule this is exactly the rule's symmetry; the looser
rules' own tolerances (project 1.5x, DeepMoon 2x) would exempt 30 or 40 km detections, and on LOLA
the unmatched 30-40 km detections are not crater-shaped (``benchmarks/lola_fp_anatomy.py``: their
depth profile is shallower than matched craters'; unmatched 20-25 km ones are as deep as matched
ones). Matched detections count the same under both.
Errors are relative to the reference crater's diameter: centre distance / D_ref and
(D_atlas - D_ref) / D_ref (signed: positive = the atlas measures craters too large).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from etl.matching import RULES, STRICT_RULE, MatchRule, match_one_to_one
from etl.moon import MOON_RADIUS_KM, great_circle_distance_m

__all__ = ["BOUNDARIES", "SYMMETRIC_BOUNDARY_RATIO", "Region", "evaluate_atlas", "unlabelled_below_km", "cumulative_sfd", "plot_sfd",
           "default_bins_km"]


@dataclass(frozen=True)
class Region:
    """A lon/lat box, degrees; ``lon_min > lon_max`` crosses the antimeridian."""

    lon_min: float
    lat_min: float
    lon_max: float
    lat_max: float

    def contains(self, lon_deg, lat_deg) -> np.ndarray:
        lon, lat = np.asarray(lon_deg, dtype=float), np.asarray(lat_deg, dtype=float)
        in_lat = (lat >= self.lat_min) & (lat <= self.lat_max)
        if self.lon_min <= self.lon_max:
            return in_lat & (lon >= self.lon_min) & (lon <= self.lon_max)
        return in_lat & ((lon >= self.lon_min) | (lon <= self.lon_max))

    def area_km2(self) -> float:
        """Area on the Moon sphere: R^2 x delta-lon (rad) x (sin lat_max - sin lat_min)."""
        dlon = (self.lon_max - self.lon_min) % 360.0 or 360.0
        return float(MOON_RADIUS_KM ** 2 * np.radians(dlon)
                     * (np.sin(np.radians(self.lat_max)) - np.sin(np.radians(self.lat_min))))

    @classmethod
    def around(cls, lon_deg, lat_deg) -> "Region":
        """The lon/lat box of some craters' centres (no antimeridian crossing)."""
        return cls(float(np.min(lon_deg)), float(np.min(lat_deg)), float(np.max(lon_deg)), float(np.max(lat_deg)))


def default_bins_km(min_diameter_km: float, max_diameter_km: float) -> list[float]:
    """Bin edges doubling from the smallest diameter scored (last bin open-ended)."""
    edges = [float(min_diameter_km)]
    while edges[-1] * 2 <= max_diameter_km:
        edges.append(edges[-1] * 2)
    return edges


def _scores(frame: pd.DataFrame) -> np.ndarray:
    return frame["score"].to_numpy(float) if "score" in frame else np.ones(len(frame))


#: How an unmatched detection near the completeness limit counts (module docstring).
BOUNDARIES = ("detected", "symmetric")
#: The symmetric boundary's diameter tolerance: the strict rule's (module docstring).
SYMMETRIC_BOUNDARY_RATIO: float = STRICT_RULE.max_diameter_ratio


def unlabelled_below_km(min_diameter_km: float, rule: MatchRule, boundary: str = "detected",
                        boundary_ratio: float = SYMMETRIC_BOUNDARY_RATIO) -> float:
    """Unmatched detections smaller than this (km) are unlabelled, not false positives: the
    limit itself (``"detected"``), or limit x ``boundary_ratio`` capped at the rule's own
    diameter ratio (``"symmetric"``)."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if boundary == "detected":
        return float(min_diameter_km)
    return float(min_diameter_km) * min(float(boundary_ratio), rule.max_diameter_ratio)


def _rule_metrics(atlas: pd.DataFrame, reference: pd.DataFrame, rule: MatchRule, *, counted_ref: np.ndarray,
                  in_region: np.ndarray, min_diameter_km: float, bins_km: list[float],
                  target_precision: float, boundary: str = "detected") -> dict:
    score = _scores(atlas)
    match = match_one_to_one(atlas.lon, atlas.lat, atlas.diameter_km, score,
                             reference.lon, reference.lat, reference.diameter_km, rule)
    hit = match >= 0
    hit_counted = hit & counted_ref[np.maximum(match, 0)]
    hit_ignored = hit & ~counted_ref[np.maximum(match, 0)]
    d_atlas = atlas.diameter_km.to_numpy(float)
    fp_from_km = unlabelled_below_km(min_diameter_km, rule, boundary)
    counted_det = in_region & ~hit_ignored & (hit_counted | (d_atlas >= fp_from_km))
    num_ref = int(counted_ref.sum())
    tp, n_det = int((counted_det & hit_counted).sum()), int(counted_det.sum())
    precision = tp / n_det if n_det else 0.0
    recall = tp / num_ref if num_ref else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    # The whole precision-recall curve over score thresholds (greedy matching by score makes the
    # matches of detections above any threshold the same as in this one pass).
    order = np.argsort(-score[counted_det], kind="stable")
    cum_tp = np.cumsum(hit_counted[counted_det][order])
    prec_curve = cum_tp / np.arange(1, len(order) + 1)
    rec_curve = cum_tp / max(num_ref, 1)
    f1_curve = 2 * prec_curve * rec_curve / np.maximum(prec_curve + rec_curve, 1e-12)
    best = int(np.argmax(f1_curve)) if len(f1_curve) else -1
    ok = prec_curve >= target_precision
    i, j = np.flatnonzero(hit_counted & in_region), match[hit_counted & in_region]
    ref_d = reference.diameter_km.to_numpy(float)[j]
    centre_err = great_circle_distance_m(atlas.lon.to_numpy(float)[i], atlas.lat.to_numpy(float)[i],
                                         reference.lon.to_numpy(float)[j], reference.lat.to_numpy(float)[j]) / 1000.0 / ref_d
    diam_err = (d_atlas[i] - ref_d) / ref_d
    res = {
        "rule": rule.name, "boundary": boundary, "false_positive_from_km": fp_from_km,
        "num_reference": num_ref, "num_atlas": n_det, "true_positives": tp,
        "precision": precision, "recall": recall, "f1": f1,
        "best_f1": float(f1_curve[best]) if best >= 0 else 0.0,
        "best_f1_score_thresh": float(score[counted_det][order][best]) if best >= 0 else float("nan"),
        f"recall_at_precision_{target_precision:g}": float(rec_curve[ok].max()) if ok.any() else 0.0,
        "median_centre_error_frac": float(np.median(centre_err)) if len(i) else float("nan"),
        "median_abs_diameter_error_frac": float(np.median(np.abs(diam_err))) if len(i) else float("nan"),
        "median_diameter_bias_frac": float(np.median(diam_err)) if len(i) else float("nan"),
        "bins": [],
    }
    found = np.zeros(len(reference), dtype=bool)
    found[match[hit_counted & counted_det]] = True
    ref_d_all = reference.diameter_km.to_numpy(float)
    edges = list(bins_km) + [np.inf]
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_ref = counted_ref & (ref_d_all >= lo) & (ref_d_all < hi)
        in_det = counted_det & (d_atlas >= lo) & (d_atlas < hi)
        in_pair = (ref_d >= lo) & (ref_d < hi)
        res["bins"].append({
            "diameter_km_min": lo, "diameter_km_max": hi, "num_reference": int(in_ref.sum()),
            "num_atlas": int(in_det.sum()),
            "recall": float(found[in_ref].mean()) if in_ref.any() else float("nan"),
            "precision": float(hit_counted[in_det].mean()) if in_det.any() else float("nan"),
            "median_centre_error_frac": float(np.median(centre_err[in_pair])) if in_pair.any() else float("nan"),
            "median_abs_diameter_error_frac": float(np.median(np.abs(diam_err[in_pair]))) if in_pair.any() else float("nan"),
            "median_diameter_bias_frac": float(np.median(diam_err[in_pair])) if in_pair.any() else float("nan"),
        })
    return res


def evaluate_atlas(atlas: pd.DataFrame, reference: pd.DataFrame, *, region: Region | None = None,
                   min_diameter_km: float = 0.0, score_threshold: float | None = None,
                   rules: tuple[str, ...] = ("project", "deepmoon"), bins_km: list[float] | None = None,
                   target_precision: float = 0.9, boundary: str = "detected") -> dict:
    """Scores of ``atlas`` (lon, lat, diameter_km[, score]) against ``reference`` (lon, lat,
    diameter_km) under each rule named in ``rules`` (``etl.matching.RULES``). Fractions in
    [0, 1]; errors relative to the reference diameter; diameters in km. ``boundary``: how an
    unmatched detection near ``min_diameter_km`` counts (``BOUNDARIES``, module docstring)."""
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if score_threshold is not None and "score" in atlas:
        atlas = atlas[atlas.score.to_numpy(float) >= score_threshold]
    atlas = atlas.reset_index(drop=True)
    reference = reference.reset_index(drop=True)
    region = region or Region.around(reference.lon, reference.lat)
    in_region_ref = region.contains(reference.lon, reference.lat)
    counted_ref = in_region_ref & (reference.diameter_km.to_numpy(float) >= min_diameter_km)
    in_region = region.contains(atlas.lon, atlas.lat)
    if bins_km is None:
        top = float(reference.diameter_km[counted_ref].max()) if counted_ref.any() else 2 * max(min_diameter_km, 1)
        smallest = float(reference.diameter_km[counted_ref].min()) if counted_ref.any() else 1.0
        # From the completeness limit, else from a round number (a power of ten) below the smallest.
        bins_km = default_bins_km(min_diameter_km if min_diameter_km > 0 else 10.0 ** np.floor(np.log10(smallest)),
                                  top)
    out = {"region": region.__dict__, "area_km2": region.area_km2(), "min_diameter_km": min_diameter_km,
           "boundary": boundary, "score_threshold": score_threshold, "rules": {}}
    for name in rules:
        out["rules"][name] = _rule_metrics(atlas, reference, RULES[name], counted_ref=counted_ref,
                                           in_region=in_region, min_diameter_km=min_diameter_km, bins_km=bins_km,
                                           target_precision=target_precision, boundary=boundary)
    out["_sfd"] = {"atlas_km": atlas.diameter_km.to_numpy(float)[in_region],
                   "reference_km": reference.diameter_km.to_numpy(float)[in_region_ref]}
    return out


def cumulative_sfd(diameter_km, area_km2: float) -> tuple[np.ndarray, np.ndarray]:
    """Diameters sorted descending and N(>= D) per km^2 at each."""
    d = np.sort(np.asarray(diameter_km, dtype=float))[::-1]
    return d, np.arange(1, len(d) + 1) / area_km2


def plot_sfd(atlas_km, reference_km, area_km2: float, out_png, *, min_diameter_km: float = 0.0,
             labels: tuple[str, str] = ("atlas", "reference"), dpi: int = 80):
    """Cumulative SFDs of atlas and reference, log-log, N(>= D) per km^2 against D in km."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5), constrained_layout=True)
    for d, label, style in ((atlas_km, labels[0], "-"), (reference_km, labels[1], "--")):
        if len(d):
            x, y = cumulative_sfd(d, area_km2)
            ax.step(x, y, style, where="post", label=f"{label} ({len(d):,} craters)")
    if min_diameter_km > 0:
        ax.axvline(min_diameter_km, color="0.5", lw=0.8, ls=":", label=f"scored from {min_diameter_km:g} km")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("crater diameter D (km)")
    ax.set_ylabel("cumulative number N(>= D) per km$^2$")
    ax.set_title(f"cumulative size-frequency distribution ({area_km2:,.0f} km$^2$)")
    ax.grid(True, which="both", lw=0.3)
    ax.legend()
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
