"""Crater attributes for the age network's attribute branch, under a versioned schema.

Four groups, each a set of named float64 columns with units:

- **morphometry**, measured on the DEM crop (metres, local azimuthal-equidistant, see
  :mod:`etl.crops`). Heights are taken above the *surroundings*: a plane fitted to the
  crop beyond 2.5 radii from the centre, where the ejecta has thinned to ~1 % of the rim
  height (so a crater on a regional slope is measured level).
  Depth is rim crest to floor, as in Pike (1977): the mean crest height along 36 azimuths
  minus the floor (the mean of the lowest 1 % of the interior, r <= 0.9 R, at least 3 pixels).
- **scaling laws** from the diameter alone: Pike (1977) fresh depth and rim height, floor
  diameter and central peak (:func:`etl.synthetic.crater_shape_km` owns those formulas),
  the simple/complex transition, the transient cavity (Croft 1985), excavation depth and
  ejecta (McGetchin et al. 1973); and the measured/fresh ratios of depth and rim height,
  the degradation state that the diameter alone cannot give;
- **optical**, from the DOM crop: interior and ejecta brightness against the surroundings;
- **stratigraphy**, from a :class:`etl.geology.UnitSource`, crater-material units switchable.

Measured quantities are NaN for a crop that is not valid (:class:`etl.crops.CraterCrops`);
quantities from the diameter are always there. The schema (names, units, a version that
hashes them) is saved beside a model, which refuses attributes of another schema.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from etl.crops import CraterCrops
from etl.synthetic import crater_shape_km

__all__ = ["ATTRIBUTE_DEFINITIONS_VERSION", "AttributeSchema", "AttributeSchemaError", "SIMPLE_COMPLEX_TRANSITION_KM",
           "crater_attributes", "scaling_law_attributes"]

#: Bump when the meaning of an existing attribute changes (the hash only sees names and units).
ATTRIBUTE_DEFINITIONS_VERSION = 1

#: Simple-to-complex transition diameter on the Moon, km (Pike 1977; the default of
#: crater_shape_km, which owns the formulas on either side of it).
SIMPLE_COMPLEX_TRANSITION_KM = 15.0

# Ring radii, in crater radii: the interior, the inner wall, the rim crest search band, the
# ejecta annulus and the surroundings (the crop reaches k/2 diameters = k radii along its axes).
_INTERIOR, _FLOOR_SEARCH = 0.9, 0.9
_WALL = (0.3, 0.9)  # the inner wall, short of the crest, whose kink no gradient resolves
_CREST_SEARCH = (0.7, 1.3)
_EJECTA = (1.0, 2.0)
_SURROUNDINGS_FROM = 2.5  # to the crop's edge (k radii on its axes, k * 1.41 in its corners)
_N_AZIMUTHS = 36
ORDER = 3
# Floor flatness: the share of the interior lying within this fraction of the depth above the floor.
_FLAT_WITHIN_DEPTH = 0.1


class AttributeSchemaError(ValueError):
    """Attributes of one schema given to a model made with another."""


@dataclass(frozen=True)
class AttributeSchema:
    version: str                  # "<definitions version>:<12-hex hash of names + units>"
    names: tuple[str, ...]
    units: tuple[str, ...]        # same length as names ("1" dimensionless, "m", "km", "deg", ...)

    @classmethod
    def build(cls, names, units) -> "AttributeSchema":
        names, units = tuple(names), tuple(units)
        if len(names) != len(units):
            raise ValueError(f"{len(names)} attribute names but {len(units)} units")
        if len(set(names)) != len(names):
            raise ValueError("attribute names must be unique")
        digest = hashlib.sha256("\n".join(f"{n}\t{u}" for n, u in zip(names, units)).encode()).hexdigest()[:12]
        return cls(f"{ATTRIBUTE_DEFINITIONS_VERSION}:{digest}", names, units)

    def check_matches(self, other: "AttributeSchema") -> None:
        """Raise :class:`AttributeSchemaError` unless ``other`` is this schema (self = the model's)."""
        if self == other:
            return
        missing = [n for n in self.names if n not in other.names]
        extra = [n for n in other.names if n not in self.names]
        lines = [f"attribute schema mismatch: the model expects version {self.version} "
                 f"({len(self.names)} attributes), the data has version {other.version} ({len(other.names)})"]
        if missing:
            lines.append(f"missing from the data: {_listing(missing)}")
        if extra:
            lines.append(f"not known to the model: {_listing(extra)}")
        unit_diff = [f"{n} ({u} vs {other.units[other.names.index(n)]})" for n, u in zip(self.names, self.units)
                     if n in other.names and other.units[other.names.index(n)] != u]
        if unit_diff:
            lines.append(f"different units: {_listing(unit_diff)}")
        if not (missing or extra or unit_diff):
            if self.names != other.names:
                lines.append("same attributes in another order")
            else:
                lines.append("same names and units, other definitions version")
        lines.append("compute the attributes with the settings the model was trained with "
                     "(e.g. crater_material_units, a DOM and a DEM, the same unit source)")
        raise AttributeSchemaError("; ".join(lines))

    def to_dict(self) -> dict:
        return {"version": self.version, "names": list(self.names), "units": list(self.units)}

    @classmethod
    def from_dict(cls, d: dict) -> "AttributeSchema":
        return cls(str(d["version"]), tuple(d["names"]), tuple(d["units"]))


def _listing(items: list[str], most: int = 8) -> str:
    return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")


# ----------------------------------------------------------------------------- scaling laws


def scaling_law_attributes(diameter_km) -> tuple[pd.DataFrame, list[str]]:
    """Quantities a fresh crater of this diameter would have (no measurement involved)."""
    d = np.asarray(diameter_km, dtype=float)
    fresh = crater_shape_km(d, SIMPLE_COMPLEX_TRANSITION_KM)
    radius_km = d / 2.0
    # Transient cavity: Croft (1985) D_tc = D_t^0.15 D^0.85 for complex craters; a simple
    # crater's rim is ~1.2 x its transient cavity (Melosh 1989), so D_tc = D / 1.2 there.
    transient_km = np.where(d >= SIMPLE_COMPLEX_TRANSITION_KM,
                            SIMPLE_COMPLEX_TRANSITION_KM ** 0.15 * d ** 0.85, d / 1.2)
    cols = {
        "log10_diameter_km": (np.log10(d), "log10(km)"),
        "diameter_over_transition": (d / SIMPLE_COMPLEX_TRANSITION_KM, "1"),
        "is_complex": (fresh["complex"].astype(float), "1"),
        "fresh_depth_km": (fresh["depth_km"], "km"),
        "fresh_rim_height_km": (fresh["rim_height_km"], "km"),
        "fresh_depth_diameter": (fresh["depth_km"] / d, "1"),
        "floor_diameter_km": (fresh["floor_diameter_km"], "km"),
        "central_peak_height_km": (fresh["peak_height_km"], "km"),
        "transient_cavity_diameter_km": (transient_km, "km"),
        # Excavation depth ~ 0.1 D_tc (Melosh 1989).
        "excavation_depth_km": (0.1 * transient_km, "km"),
        # Continuous ejecta reaches about one diameter beyond the rim (Moore et al. 1974).
        "ejecta_extent_km": (radius_km + d, "km"),
    }
    # Ejecta thickness t = 0.14 R^0.74 (r / R)^-3 (McGetchin et al. 1973; t and R in metres).
    for radii in (1, 2, 3, 5):
        cols[f"ejecta_thickness_{radii}r_m"] = (0.14 * (radius_km * 1000.0) ** 0.74 * radii ** -3.0, "m")
    frame = pd.DataFrame({k: np.asarray(v, dtype=float) for k, (v, _) in cols.items()})
    return frame, [u for _, u in cols.values()]


# ----------------------------------------------------------------------------- morphometry

_MORPHOMETRY_UNITS = {
    "depth_m": "m",
    "depth_diameter": "1",
    "rim_height_m": "m",
    "rim_sharpness": "1",
    "wall_slope_mean_deg": "deg",
    "wall_slope_max_deg": "deg",
    "floor_flatness": "1",
    "interior_roughness_m": "m",
    "interior_roughness_rel": "1",
    "rim_circularity": "1",
    "rim_radius_rel": "1",
    "ejecta_relief_m": "m",
    "ejecta_roughness_m": "m",
    "surroundings_slope_deg": "deg",
    "depth_over_fresh": "1",
    "rim_height_over_fresh": "1",
}
_OPTICAL_UNITS = {
    "interior_brightness_ratio": "1",
    "ejecta_brightness_ratio": "1",
    "ejecta_bright_fraction": "1",
}


class _Rings:
    """Pixel masks and sampling geometry shared by every crop of one CropSettings."""

    def __init__(self, settings):
        self.radius_px = settings.radius_px
        self.r = settings.radius_grid()
        s = settings.size_px
        offsets = np.arange(s) + 0.5 - s / 2.0
        self.dx, self.dy = np.meshgrid(offsets, -offsets)  # crop px east, north of the centre
        if settings.side_diameters < 2.75:
            raise ValueError("attributes need crops reaching past the ejecta into the surroundings "
                             f"(side_diameters >= 2.75), got side_diameters={settings.side_diameters}")
        self.surroundings = self.r >= _SURROUNDINGS_FROM
        self.interior = self.r <= _INTERIOR
        self.wall = (self.r >= _WALL[0]) & (self.r <= _WALL[1])
        self.ejecta = (self.r > _EJECTA[0]) & (self.r <= _EJECTA[1])
        # Rays for the rim crest: sub-pixel radii along equally spaced azimuths.
        self.azimuths = np.linspace(0.0, 2.0 * np.pi, _N_AZIMUTHS, endpoint=False)
        self.ray_radii = np.arange(_CREST_SEARCH[0], _CREST_SEARCH[1] + 1e-9, 0.02)
        rr = self.ray_radii[None, :] * self.radius_px
        centre = s / 2.0 - 0.5  # array index of the crop centre
        self.ray_cols = centre + rr * np.sin(self.azimuths)[:, None]
        self.ray_rows = centre - rr * np.cos(self.azimuths)[:, None]
        # Radial profile bins (in radii) for the azimuthal mean.
        self.bin_width = 0.05
        self.bins = (self.r / self.bin_width).astype(int)


def _plane_fit(h: np.ndarray, mask: np.ndarray, dx: np.ndarray, dy: np.ndarray):
    sel = mask & np.isfinite(h)
    if sel.sum() < 3:
        return None
    a = np.column_stack([np.ones(sel.sum()), dx[sel], dy[sel]])
    coef = np.linalg.lstsq(a, h[sel].astype(float), rcond=None)[0]
    return coef


def _morphometry(dem: np.ndarray, pixel_m: float, diameter_km: float, rings: _Rings,
                 fresh_depth_m: float, fresh_rim_m: float) -> dict[str, float]:
    from scipy import ndimage

    coef = _plane_fit(dem, rings.surroundings, rings.dx, rings.dy)
    if coef is None:
        return {}
    h = dem.astype(float) - (coef[0] + coef[1] * rings.dx + coef[2] * rings.dy)
    surroundings_slope = math.degrees(math.atan(math.hypot(coef[1], coef[2]) / pixel_m))
    radius_m = diameter_km * 500.0

    # Rim crest along each azimuth (NaN-free interpolation: NaN pixels filled by the crater's
    # azimuthal mean at their radius, so one dead pixel does not kill an azimuth).
    finite = np.isfinite(h)
    nbins = rings.bins.max() + 1
    sums = np.bincount(rings.bins[finite], weights=h[finite], minlength=nbins)
    counts = np.bincount(rings.bins[finite], minlength=nbins)
    with np.errstate(invalid="ignore", divide="ignore"):
        profile = sums / counts
    x_bins = (np.arange(nbins) + 0.5) * rings.bin_width
    has = np.isfinite(profile)
    # The azimuthal-mean profile at every pixel's own radius (interpolated, not the bin's
    # constant, which on a steep wall would pass for roughness).
    radial = np.interp(rings.r, x_bins[has], profile[has]) if has.sum() >= 2 else np.full(h.shape, np.nan)
    filled = np.where(finite, h, radial)
    filled = np.where(np.isfinite(filled), filled, np.nanmean(h))
    rays = ndimage.map_coordinates(filled, [rings.ray_rows, rings.ray_cols], order=3, mode="nearest")
    k = np.argmax(rays, axis=1)
    crest_h = rays[np.arange(len(k)), k]
    crest_r = rings.ray_radii[k]
    rim_height = float(np.mean(crest_h))

    interior = h[rings.interior & finite]
    if interior.size < 3:
        return {}
    lowest = np.sort(interior)[: max(3, int(math.ceil(0.01 * interior.size)))]
    floor = float(lowest.mean())
    depth = rim_height - floor

    # Slopes (degrees) from the gradient in metres per metre.
    d_row, d_col = np.gradient(h, pixel_m)
    slope = np.degrees(np.arctan(np.hypot(d_row, d_col)))
    wall = slope[rings.wall & np.isfinite(slope)]

    # Rim sharpness: minus the second derivative of the azimuthal-mean profile at the crest,
    # with x in radii, over the radius: R d2h/dr2, dimensionless (sharp fresh rims: large).
    x_crest = float(np.mean(crest_r))
    near = np.isfinite(profile) & (np.abs(x_bins - x_crest) <= 0.2)
    sharpness = np.nan
    if near.sum() >= 3:
        c2 = np.polyfit(x_bins[near] - x_crest, profile[near], 2)[0]
        sharpness = -2.0 * c2 / radius_m

    # Interior (and ejecta) roughness: what the radial profile does not explain.
    resid = (h - radial)[rings.interior & finite]
    roughness = float(np.sqrt(np.mean(resid ** 2))) if resid.size else np.nan

    # Rim circularity: 4 pi A / P^2 of the crest polygon (1 for a circle).
    xs, ys = crest_r * np.sin(rings.azimuths), crest_r * np.cos(rings.azimuths)
    area = 0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))
    perimeter = float(np.sum(np.hypot(np.diff(xs, append=xs[0]), np.diff(ys, append=ys[0]))))
    circularity = 4.0 * math.pi * area / perimeter ** 2 if perimeter > 0 else np.nan

    ejecta = h[rings.ejecta & finite]
    ejecta_resid = (h - radial)[rings.ejecta & finite]
    flat = (interior - floor) <= _FLAT_WITHIN_DEPTH * max(depth, 1e-9)
    return {
        "depth_m": depth,
        "depth_diameter": depth / (diameter_km * 1000.0),
        "rim_height_m": rim_height,
        "rim_sharpness": sharpness,
        "wall_slope_mean_deg": float(np.mean(wall)) if wall.size else np.nan,
        "wall_slope_max_deg": float(np.max(wall)) if wall.size else np.nan,
        "floor_flatness": float(np.mean(flat)),
        "interior_roughness_m": roughness,
        "interior_roughness_rel": roughness / depth if depth > 0 else np.nan,
        "rim_circularity": circularity,
        "rim_radius_rel": x_crest,
        "ejecta_relief_m": float(np.mean(ejecta)) if ejecta.size else np.nan,
        "ejecta_roughness_m": float(np.sqrt(np.mean(ejecta_resid ** 2))) if ejecta_resid.size else np.nan,
        "surroundings_slope_deg": surroundings_slope,
        "depth_over_fresh": depth / fresh_depth_m,
        "rim_height_over_fresh": rim_height / fresh_rim_m,
    }


def _optical(dom: np.ndarray, rings: _Rings) -> dict[str, float]:
    finite = np.isfinite(dom)
    around = dom[rings.surroundings & finite]
    if around.size < 3:
        return {}
    level = float(np.median(around))
    spread = float(np.percentile(around, 90))
    if not level > 0:
        return {}
    interior, ejecta = dom[rings.interior & finite], dom[rings.ejecta & finite]
    return {
        "interior_brightness_ratio": float(np.median(interior)) / level if interior.size else np.nan,
        "ejecta_brightness_ratio": float(np.median(ejecta)) / level if ejecta.size else np.nan,
        # Rays and bright halos: the share of the ejecta annulus brighter than 90 % of the surroundings.
        "ejecta_bright_fraction": float(np.mean(ejecta > spread)) if ejecta.size else np.nan,
    }


def crater_attributes(craters: pd.DataFrame, crops: CraterCrops, *, units=None,
                      crater_material_units: bool = True, progress: bool = False
                      ) -> tuple[pd.DataFrame, AttributeSchema]:
    """Attributes of every crater (same order as ``craters`` and ``crops``) and their schema.

    Morphometry columns exist when the crops have a DEM, optical ones when they have a DOM,
    stratigraphy ones when ``units`` (an :class:`etl.geology.UnitSource`) is given; with
    ``crater_material_units=False`` crater-material units are ignored and their columns
    dropped. Measured values are NaN where a crop is not valid.
    """
    if len(craters) != len(crops):
        raise ValueError(f"{len(craters)} craters but {len(crops)} crops")
    diameter_km = craters["diameter_km"].to_numpy(dtype=float)
    scaling, scaling_units = scaling_law_attributes(diameter_km)
    parts, all_units = [scaling], list(scaling_units)
    rings = _Rings(crops.settings)
    n = len(craters)
    measured: dict[str, np.ndarray] = {}
    if crops.dem_m is not None:
        measured.update({k: np.full(n, np.nan) for k in _MORPHOMETRY_UNITS})
        all_units += list(_MORPHOMETRY_UNITS.values())
    if crops.dom is not None:
        measured.update({k: np.full(n, np.nan) for k in _OPTICAL_UNITS})
        all_units += list(_OPTICAL_UNITS.values())
    fresh_depth_m = scaling["fresh_depth_km"].to_numpy() * 1000.0
    fresh_rim_m = scaling["fresh_rim_height_km"].to_numpy() * 1000.0
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="crater attributes", unit="crater")
    for i in iterator:
        if not crops.valid[i]:
            continue
        values = {}
        if crops.dem_m is not None:
            values.update(_morphometry(crops.dem_m[i], float(crops.pixel_size_m[i]), diameter_km[i], rings,
                                       fresh_depth_m[i], fresh_rim_m[i]))
        if crops.dom is not None:
            values.update(_optical(crops.dom[i], rings))
        for name, value in values.items():
            measured[name][i] = value
    if measured:
        parts.append(pd.DataFrame(measured))
    if units is not None:
        strat, strat_units = units.attributes(craters, settings=crops.settings,
                                              crater_material_units=crater_material_units, progress=progress)
        parts.append(strat.reset_index(drop=True))
        all_units += list(strat_units)
    frame = pd.concat([p.reset_index(drop=True) for p in parts], axis=1).astype(np.float64)
    frame.index = craters.index
    return frame, AttributeSchema.build(frame.columns, all_units)
