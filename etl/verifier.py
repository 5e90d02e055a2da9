"""A second stage for an atlas: re-score each detection from what the DEM shows at its circle.

The detector ranks candidates by appearance in a tile; on LOLA most of the craters it misses at a
given precision are found but scored low (``benchmarks/lola_fp_anatomy.py``: 78 of 112 misses), and
many of its false positives are rings and floors inside basins or boxes spanning two craters. The
verifier measures a few physical quantities on a crater-centred DEM crop of each detection
(:mod:`etl.crops`, :mod:`etl.attributes`) and combines them with the detector's score in a
logistic regression, whose probability becomes the detection's score.

Features (:data:`FEATURES`, names and units; a schema hashes them and a model refuses another):

- ``detector_logit``: log(s / (1 - s)) of the detector's score s;
- ``log10_diameter_km``: the detected diameter;
- ``depth_over_fresh``, ``rim_height_over_fresh``, ``wall_slope_mean_deg``, ``rim_circularity``,
  ``diffusion_fit_rms_rel``: :func:`etl.attributes.crater_attributes` morphometry of the crop, each
  detection measured alone (no neighbour masking: other detections are candidates, not known craters);
- ``bowl_contrast_m_per_km``: mean elevation of the 1-2 radii annulus minus that within 0.7 radii,
  per km of diameter (a bowl is positive, flat ground 0, a dome or a ring's inside negative);
- ``in_large_basin``: 1 when the centre lies within ``basin_reach`` basin diameters of a detection
  of the same atlas >= ``basin_min_km`` scored >= ``basin_min_score`` (rings and floors of basins
  look like craters to the detector).

Missing measurements (a crop off the DEM) are filled with the training medians saved in the model.
The model is numpy only: standardised features, L2-penalised logistic regression fitted by
iteratively reweighted least squares; saved as JSON with its schema and feature settings.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from etl.attributes import AttributeSchema, crater_attributes
from etl.crops import CraterCrops, CropSettings, extract_crops
from etl.moon import MOON_RADIUS_M, unit_vector

__all__ = ["FEATURES", "FEATURE_SCHEMA", "CraterVerifier", "VerifierSettings", "verifier_features", "rescore"]

#: name -> unit, in model order.
FEATURES: dict[str, str] = {
    "detector_logit": "1",
    "log10_diameter_km": "log10(km)",
    "depth_over_fresh": "1",
    "rim_height_over_fresh": "1",
    "wall_slope_mean_deg": "deg",
    "rim_circularity": "1",
    "diffusion_fit_rms_rel": "1",
    "bowl_contrast_m_per_km": "m/km",
    "in_large_basin": "1",
}
FEATURE_SCHEMA = AttributeSchema.build(FEATURES.keys(), FEATURES.values())
_FROM_ATTRIBUTES = ("depth_over_fresh", "rim_height_over_fresh", "wall_slope_mean_deg", "rim_circularity",
                    "diffusion_fit_rms_rel")
# The bowl contrast: the interior within this many radii against the annulus between these radii.
_BOWL_INSIDE, _BOWL_ANNULUS = 0.7, (1.0, 2.0)
# Detector scores are clipped to this distance from 0 and 1 before the logit.
_SCORE_EPS = 1e-4


@dataclass(frozen=True)
class VerifierSettings:
    """How features are measured (saved with a model; :func:`rescore` measures with the model's)."""

    # Crater-centred crop, S x S pixels: 32 px over 3 diameters is about one crop pixel per LOLA pixel
    # (3.8 km) for a 40 km crater; 64 px separated catalogue craters from random places the same
    # (feature medians within a few per cent) at twice the cost.
    crop_size_px: int = 32
    crop_side_diameters: float = 3.0  # its side, in crater diameters (reaches 3 radii on its axes)
    basin_min_km: float = 150.0       # a detection this large or larger counts as a basin ...
    basin_min_score: float = 0.5      # ... when the detector scores it at least this
    basin_reach: float = 0.6          # inside: centre within this many basin diameters of its centre
    min_detector_score: float = 0.0   # candidates the detector scores lower are not measured (score 0)

    @property
    def crop(self) -> CropSettings:
        return CropSettings(size_px=self.crop_size_px, side_diameters=self.crop_side_diameters)


def _bowl_contrast(dem_m: np.ndarray, r_radii: np.ndarray, diameter_km: float) -> float:
    inside = np.isfinite(dem_m) & (r_radii <= _BOWL_INSIDE)
    ring = np.isfinite(dem_m) & (r_radii > _BOWL_ANNULUS[0]) & (r_radii <= _BOWL_ANNULUS[1])
    if inside.sum() < 3 or ring.sum() < 3:
        return np.nan
    return float((dem_m[ring].mean() - dem_m[inside].mean()) / diameter_km)


def _in_large_basin(lon, lat, diameter_km, score, settings: VerifierSettings) -> np.ndarray:
    big = (diameter_km >= settings.basin_min_km) & (score >= settings.basin_min_score)
    out = np.zeros(len(lon), dtype=bool)
    if not big.any():
        return out
    xyz = unit_vector(lon, lat)
    for b in np.flatnonzero(big):
        # Chord on the unit sphere of the basin's reach (great-circle angle = distance / radius).
        angle = settings.basin_reach * diameter_km[b] * 1000.0 / MOON_RADIUS_M
        inside = np.linalg.norm(xyz - xyz[b], axis=1) <= 2.0 * math.sin(angle / 2.0)
        inside[b] = False
        # A basin does not make a detection of its own size (a duplicate) a ring.
        out |= inside & (diameter_km < 0.5 * diameter_km[b])
    return out


def _one(crops: CraterCrops, i: int) -> CraterCrops:
    return CraterCrops(dom=None, dem_m=crops.dem_m[i:i + 1], pixel_size_m=crops.pixel_size_m[i:i + 1],
                       valid=crops.valid[i:i + 1], reasons=crops.reasons[i:i + 1], settings=crops.settings)


def verifier_features(detections: pd.DataFrame, dem_path, *, settings: VerifierSettings = VerifierSettings(),
                      measure: np.ndarray | None = None, progress: bool = False) -> pd.DataFrame:
    """:data:`FEATURES` of every detection (columns lon, lat in degrees, diameter_km, score), same
    index and order; measured values NaN where the crop is not valid and for detections scored under
    ``settings.min_detector_score`` (not measured). ``detections`` should be a whole atlas
    (``in_large_basin`` looks for basins among its rows). ``measure`` (bool per row, optional):
    measure only these rows (e.g. a sample to fit on; a crop costs ~0.1 s), the others as if
    under the score floor; the basin flag still sees every row."""
    lon = detections["lon"].to_numpy(float)
    lat = detections["lat"].to_numpy(float)
    d_km = detections["diameter_km"].to_numpy(float)
    score = detections["score"].to_numpy(float)
    n = len(detections)
    out = pd.DataFrame({name: np.full(n, np.nan) for name in FEATURES}, index=detections.index)
    s = np.clip(score, _SCORE_EPS, 1.0 - _SCORE_EPS)
    out["detector_logit"] = np.log(s / (1.0 - s))
    out["log10_diameter_km"] = np.log10(d_km)
    out["in_large_basin"] = _in_large_basin(lon, lat, d_km, score, settings).astype(float)
    if n == 0:
        return out
    take = score >= settings.min_detector_score
    if measure is not None:
        measure = np.asarray(measure, dtype=bool)
        if measure.shape != take.shape:
            raise ValueError(f"measure has {measure.shape[0]} rows, the detections {n}")
        take &= measure
    rows = np.flatnonzero(take)
    table = pd.DataFrame({"lon": lon[rows], "lat": lat[rows], "diameter_km": d_km[rows]})
    crops = extract_crops(table, dem_path=dem_path, settings=settings.crop, progress=progress)
    r_radii = settings.crop.radius_grid()
    measured = {name: np.full(n, np.nan) for name in _FROM_ATTRIBUTES + ("bowl_contrast_m_per_km",)}
    iterator = range(len(rows))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="verifier features", unit="detection")
    for k in iterator:
        if not crops.valid[k]:
            continue
        i = rows[k]
        # Alone: the table's other rows are candidates (duplicates, rings), not craters to mask out.
        attrs, _ = crater_attributes(table.iloc[k:k + 1], _one(crops, k))
        for name in _FROM_ATTRIBUTES:
            measured[name][i] = attrs[name].iloc[0] if name in attrs else np.nan
        measured["bowl_contrast_m_per_km"][i] = _bowl_contrast(crops.dem_m[k], r_radii, d_km[i])
    for name, values in measured.items():
        out[name] = values
    return out[list(FEATURES)]


@dataclass
class CraterVerifier:
    """Logistic regression on standardised :data:`FEATURES` (``predict`` gives P(crater))."""

    coef: np.ndarray                     # per feature, on standardised values
    intercept: float
    mean: np.ndarray
    std: np.ndarray
    fill: np.ndarray                     # per feature, the training median for missing values
    l2: float
    settings: VerifierSettings = field(default_factory=VerifierSettings)
    schema: AttributeSchema = FEATURE_SCHEMA
    score_threshold: float | None = None  # chosen on validation data (not by fit)
    notes: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, features: pd.DataFrame, labels, *, l2: float = 1.0, settings: VerifierSettings = VerifierSettings(),
            iterations: int = 50) -> "CraterVerifier":
        """``labels``: 1 = a crater, 0 = not; rows with NaN labels are left out. ``l2`` penalises
        the standardised coefficients (not the intercept) as l2 / 2 |w|^2 against the summed
        log-likelihood divided by the number of rows."""
        intercept, coef, mean, std, fill = _fit_logistic(_matrix(features), labels, l2, iterations)
        return cls(coef=coef, intercept=intercept, mean=mean, std=std, fill=fill, l2=float(l2), settings=settings)

    @classmethod
    def fit_stacked(cls, features: pd.DataFrame, labels, stack_features: pd.DataFrame, stack_labels, *,
                    l2: float = 1.0, stack_l2: float = 1e-3, settings: VerifierSettings = VerifierSettings(),
                    iterations: int = 50) -> "CraterVerifier":
        """The DEM features' weights fitted on (``features``, ``labels``) without the detector's
        score, then the detector's logit and that model's logit weighed by a second logistic
        regression on another sample (``stack_*``, penalised by ``stack_l2``): for detections the
        detector was trained on, whose scores are too confident (e.g. its training region), with
        the stack sample drawn from elsewhere (a validation region). One model of :data:`FEATURES`
        comes back: P = sigmoid(a + b detector_logit + c m), m the DEM model's logit."""
        x = _matrix(features)  # column 0: detector_logit (the first of FEATURES)
        i_m, w_m, mean_m, std_m, fill_m = _fit_logistic(x[:, 1:], labels, l2, iterations)
        xs = _matrix(stack_features)
        dem = np.where(np.isfinite(xs[:, 1:]), xs[:, 1:], fill_m)
        m = i_m + ((dem - mean_m) / std_m) @ w_m
        a, (b, c), mean2, std2, fill2 = _fit_logistic(np.column_stack([xs[:, 0], m]), stack_labels, stack_l2,
                                                      iterations)
        b, c = b / std2[0], c / std2[1]            # per unit of detector logit and of m
        a = a - b * mean2[0] - c * mean2[1]
        # detector_logit enters unstandardised (mean 0, std 1); the DEM features as the DEM model had them.
        return cls(coef=np.r_[b, c * w_m], intercept=float(a + c * i_m), mean=np.r_[0.0, mean_m],
                   std=np.r_[1.0, std_m], fill=np.r_[fill2[0], fill_m], l2=float(l2), settings=settings,
                   notes={"stacked": {"detector_logit_weight": float(b), "dem_logit_weight": float(c),
                                      "stack_l2": float(stack_l2)}})

    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """P(crater) for each row of ``features`` (the :data:`FEATURES` columns, in any order)."""
        x = _matrix(features)
        x = np.where(np.isfinite(x), x, self.fill)
        return _sigmoid(self.intercept + ((x - self.mean) / self.std) @ self.coef)

    def to_dict(self) -> dict:
        return {"kind": "logistic_regression", "schema": self.schema.to_dict(), "settings": asdict(self.settings),
                "coef": self.coef.tolist(), "intercept": self.intercept, "mean": self.mean.tolist(),
                "std": self.std.tolist(), "fill": self.fill.tolist(), "l2": self.l2,
                "score_threshold": self.score_threshold, "notes": self.notes}

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path) -> "CraterVerifier":
        d = json.loads(Path(path).read_text())
        if d.get("kind") != "logistic_regression":
            raise ValueError(f"{path}: not a crater verifier (kind {d.get('kind')!r})")
        # Refuses a model of other features (names, units or definitions version).
        FEATURE_SCHEMA.check_matches(AttributeSchema.from_dict(d["schema"]))
        return cls(coef=np.asarray(d["coef"], float), intercept=float(d["intercept"]),
                   mean=np.asarray(d["mean"], float), std=np.asarray(d["std"], float),
                   fill=np.asarray(d["fill"], float), l2=float(d["l2"]), settings=VerifierSettings(**d["settings"]),
                   score_threshold=d.get("score_threshold"), notes=d.get("notes", {}))


def rescore(atlas: pd.DataFrame, verifier: CraterVerifier, features: pd.DataFrame | None = None,
            dem_path=None, progress: bool = False) -> pd.DataFrame:
    """The atlas with ``score`` replaced by the verifier's P(crater) (0 for candidates under the
    settings' ``min_detector_score``, which it does not measure) and the detector's kept as
    ``detector_score``; ``features`` (same rows) are measured on ``dem_path`` when not given."""
    if features is None:
        if dem_path is None:
            raise ValueError("rescore needs the features or the DEM to measure them on")
        features = verifier_features(atlas, dem_path, settings=verifier.settings, progress=progress)
    if len(features) != len(atlas):
        raise ValueError(f"{len(atlas)} detections but {len(features)} rows of features")
    detector = atlas["score"].to_numpy(float)
    p = np.where(detector >= verifier.settings.min_detector_score, verifier.predict(features), 0.0)
    return atlas.assign(detector_score=detector, score=p)


def _fit_logistic(x: np.ndarray, labels, l2: float, iterations: int):
    """L2-penalised logistic regression on standardised columns of ``x`` (NaN = the column's median)
    by iteratively reweighted least squares: intercept, coefficients, mean, std, fill."""
    y = np.asarray(labels, dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(np.unique(y)) < 2:
        raise ValueError("the verifier needs both craters and non-craters to fit")
    fill = np.nanmedian(x, axis=0)
    fill = np.where(np.isfinite(fill), fill, 0.0)
    x = np.where(np.isfinite(x), x, fill)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = np.column_stack([np.ones(len(x)), (x - mean) / std])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2 * len(x))
    penalty[0] = 0.0
    for _ in range(iterations):
        p = _sigmoid(z @ w)
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return float(w[0]), w[1:], mean, std, fill


def _matrix(features: pd.DataFrame) -> np.ndarray:
    missing = [n for n in FEATURES if n not in features.columns]
    if missing:
        raise ValueError(f"features lack column(s) {missing}")
    return features[list(FEATURES)].to_numpy(dtype=float)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(t, dtype=float)))
