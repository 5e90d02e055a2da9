"""Crater attributes for the age network's attribute branch, under a versioned schema.

Four groups, each a set of named float64 columns with units:

- **morphometry**, measured on the DEM crop (metres, local azimuthal-equidistant, see
  :mod:`etl.crops`). The other craters of the table that reach into the crop are masked
  out to 1.2 of their radii (all but a larger crater that holds this one: it is the
  terrain), so a neighbour's bowl or rim is not read as this crater's. Heights are taken
  above the *surroundings*: a quadratic surface fitted to the unmasked crop beyond 2 radii
  (with the crater's own ejecta, (r/R)^-3, fitted alongside), so a crater on a regional slope or on
  the curved floor of an older, larger crater is measured level; inside the rim the
  pre-impact surface is that surface's plane, since the impact excavated the relief there.
  Depth is rim crest to floor, as in Pike (1977): the mean crest height along 36 azimuths
  minus the floor (the mean of the lowest 1 % of the interior, r <= 0.9 R, at least 3 pixels).
  The degradation state is also fitted whole: the radial profile (median over the unmasked
  pixels of each ring) against the Pike fresh profile of this diameter diffused by a
  Gaussian of length sigma (topographic diffusion, as Fassett & Thomson 2014 date craters
  by kappa t), with the fresh amplitude and, separately, a free one. Given the DEM's own pixels
  (:func:`etl.crops.native_windows`), sigma is also fitted there (``native_*``): the fresh profile
  rendered at the source pixel centres, blurred on that grid, with a quartic surroundings
  surface, least squares over every pixel (Huber-reweighted once), with no resampling between the
  DEM and the fit (the crops' bilinear resampling blurs by about 0.4 source pixels, as much as a
  young crater's sigma at 100 m/px). There the listed overlapping neighbours are fitted jointly
  with the crater (each a Pike profile of its own diameter blurred by its own sigma), not masked;
  a larger crater holding this one is still masked.
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

from etl.crops import CraterCrops, NativeWindow, local_offsets_m as _local_offsets_m
from etl.moon import MOON_RADIUS_M, unit_vector
from etl.synthetic import crater_profile_m, crater_shape_km

__all__ = ["ATTRIBUTE_DEFINITIONS_VERSION", "AttributeSchema", "AttributeSchemaError", "SIMPLE_COMPLEX_TRANSITION_KM",
           "crater_attributes", "neighbour_keep_masks", "scaling_law_attributes"]

#: Bump when the meaning of an existing attribute changes (the hash only sees names and units).
# 2: neighbours masked, quadratic surroundings, diffusion fit; 3: the diffusion length also fitted on the
# DEM's native pixels (native_*), no crop resampling in between; 4: that fit's surroundings a quartic;
# 5: the native fit models the listed overlapping neighbours (each a degraded Pike profile of its own
# diffusion length, fitted jointly) instead of masking them
ATTRIBUTE_DEFINITIONS_VERSION = 5

#: Simple-to-complex transition diameter on the Moon, km (Pike 1977; the default of
#: crater_shape_km, which owns the formulas on either side of it).
SIMPLE_COMPLEX_TRANSITION_KM = 15.0

# Ring radii, in crater radii: the interior, the inner wall, the rim crest search band, the
# ejecta annulus and the surroundings (the crop reaches k/2 diameters = k radii along its axes).
_INTERIOR, _FLOOR_SEARCH = 0.9, 0.9
_WALL = (0.3, 0.9)  # the inner wall, short of the crest, whose kink no gradient resolves
_CREST_SEARCH = (0.7, 1.3)
_EJECTA = (1.0, 2.0)
_SURROUNDINGS_FROM = 2.0  # to the crop's edge (k radii on its axes, k * 1.41 in its corners)
# The impact excavates the older relief inside the rim: the pre-impact surface is the plane
# of the surroundings' surface there, blended (smoothstep) into that surface out to just past the rim.
_EXCAVATED = (0.8, 1.05)
# Neighbouring craters of the table are masked out to this many of their radii.
_NEIGHBOUR_MASK_RADII = 1.2
# A larger neighbour's mask stops short of this crater's own rim by this many of its radii.
_OWN_RIM_RADII = 1.1
# A crater inside a larger one sees that one's floor and wall out to this many of its radii; its rim
# and beyond are masked (their kink is no smooth surface).
_HOST_KEEP_RADII = 0.9
# Masks are dropped when they would leave less than this share of a crater's interior.
_MIN_UNMASKED_INTERIOR = 0.3
# Diffusion fit: the profile in rings of this width (radii) out to _FIT_TO radii, against the
# fresh profile diffused by sigma / R on this grid.
_FIT_BIN, _FIT_TO = 0.1, 2.0
_FIT_SIGMA_REL = np.r_[0.0, np.geomspace(0.02, 2.0, 80)]
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
    "neighbour_masked_frac": "1",
    "diffusion_length_rel": "1",
    "diffusion_length_m": "m",
    "log10_diffusion_length_m": "log10(m)",
    "diffusion_fit_rms_rel": "1",
    "diffusion_length_rel_free": "1",
    "profile_amplitude_over_fresh": "1",
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
        # The pre-impact surface: the surroundings' surface outside, its plane over the disk inside.
        self.disk = self.r <= 1.2
        self.ejecta_shape = crater_profile_m(np.maximum(self.r, 1.0), 0.0, 1.0).astype(float)
        e = np.clip((_EXCAVATED[1] - self.r) / (_EXCAVATED[1] - _EXCAVATED[0]), 0.0, 1.0)
        self.excavated = e * e * (3.0 - 2.0 * e)
        # Diffusion fit: ring index of every pixel (-1 beyond _FIT_TO) and the fresh profiles.
        self.n_fit = int(round(_FIT_TO / _FIT_BIN))
        self.fit_bins = np.where(self.r < _FIT_TO, (self.r / _FIT_BIN).astype(int), -1)
        self._simple_templates = None

    def templates(self, diameter_km: float) -> np.ndarray:
        """(len(_FIT_SIGMA_REL), n_fit) ring means of the fresh crater of this diameter, metres,
        diffused by each sigma / R. Simple craters are self-similar (Pike's exponents are ~1), so
        they share one set scaled by the fresh depth; complex ones get their own."""
        shape = crater_shape_km(np.asarray(float(diameter_km)))
        if not bool(shape["complex"]):
            if self._simple_templates is None:
                unit = crater_shape_km(np.asarray(2.0))
                self._simple_templates = self._render(unit) / (float(unit["depth_km"]) * 1000.0)
            return self._simple_templates * float(shape["depth_km"]) * 1000.0
        return self._render(shape, diameter_km)

    def _render(self, shape, diameter_km: float = 2.0) -> np.ndarray:
        from scipy import ndimage

        z = crater_profile_m(self.r, float(shape["depth_km"]) * 1000.0, float(shape["rim_height_km"]) * 1000.0,
                             float(shape["floor_diameter_km"]) / float(diameter_km),
                             float(shape["peak_height_km"]) * 1000.0).astype(float)
        inside = self.fit_bins >= 0
        counts = np.bincount(self.fit_bins[inside], minlength=self.n_fit)
        out = np.empty((len(_FIT_SIGMA_REL), self.n_fit))
        for k, s in enumerate(_FIT_SIGMA_REL):
            zz = ndimage.gaussian_filter(z, s * self.radius_px, mode="constant") if s > 0 else z
            with np.errstate(invalid="ignore", divide="ignore"):
                out[k] = np.bincount(self.fit_bins[inside], weights=zz[inside], minlength=self.n_fit) / counts
        return out


def _plane_fit(h: np.ndarray, mask: np.ndarray, dx: np.ndarray, dy: np.ndarray):
    sel = mask & np.isfinite(h)
    if sel.sum() < 3:
        return None
    a = np.column_stack([np.ones(sel.sum()), dx[sel], dy[sel]])
    coef = np.linalg.lstsq(a, h[sel].astype(float), rcond=None)[0]
    return coef


def _surroundings_surface(dem: np.ndarray, rings: _Rings):
    """The pre-impact surface under the crop (see the module docstring) and its slope at the
    centre (rise per crop pixel, east and north); None when the surroundings are too sparse."""
    sel = rings.surroundings & np.isfinite(dem)
    if sel.sum() >= 30:
        cols = [np.ones_like(rings.dx), rings.dx, rings.dy, rings.dx ** 2, rings.dx * rings.dy, rings.dy ** 2]
    elif sel.sum() >= 3:
        cols = [np.ones_like(rings.dx), rings.dx, rings.dy]
    else:
        return None
    # The crater's own ejecta, thinning as (r/R)^-3, is fitted alongside and left out of the surface.
    design = np.stack([c[sel] for c in cols] + ([rings.ejecta_shape[sel]] if len(cols) > 3 else []), axis=1)
    coef = np.linalg.lstsq(design, dem[sel].astype(float), rcond=None)[0]
    surface = sum(k * c for k, c in zip(coef, cols))
    if len(cols) > 3:
        plane = _plane_fit(surface, rings.disk, rings.dx, rings.dy)
        surface = surface + rings.excavated * (plane[0] + plane[1] * rings.dx + plane[2] * rings.dy - surface)
    return surface, (coef[1], coef[2])


def _grid_minimum(sse: np.ndarray, k: int) -> float:
    """The relative sigma at the minimum ``k`` of ``sse`` over :data:`_FIT_SIGMA_REL`; between grid
    values, the vertex of the parabola through the minimum and its neighbours (in log sigma)."""
    sigma_rel = float(_FIT_SIGMA_REL[k])
    if 1 < k < len(_FIT_SIGMA_REL) - 1:
        denom = sse[k - 1] - 2.0 * sse[k] + sse[k + 1]
        if denom > 0:
            step = float(np.clip(0.5 * (sse[k - 1] - sse[k + 1]) / denom, -0.5, 0.5))
            sigma_rel = float(np.exp(np.log(sigma_rel) + step * np.log(_FIT_SIGMA_REL[k + 1] / sigma_rel)))
    return sigma_rel


def _diffusion_fit(h: np.ndarray, diameter_km: float, rings: _Rings, fresh_depth_m: float) -> dict[str, float]:
    """sigma / R of the diffused fresh profile closest to the crater's ring medians (offset free;
    the fresh amplitude, and a free one)."""
    from scipy import ndimage

    finite = np.isfinite(h) & (rings.fit_bins >= 0)
    index = np.arange(rings.n_fit)
    counts = np.bincount(rings.fit_bins[finite], minlength=rings.n_fit)
    if (counts > 0).sum() < 5:
        return {}
    prof = np.asarray(ndimage.median(h[finite], labels=rings.fit_bins[finite], index=index), dtype=float)
    t = rings.templates(diameter_km)
    ok = (counts > 0) & np.all(np.isfinite(t), axis=0)
    p, t = prof[ok] - prof[ok].mean(), t[:, ok] - t[:, ok].mean(axis=1, keepdims=True)
    sse = ((p[None, :] - t) ** 2).sum(axis=1)
    k = int(np.argmin(sse))
    sigma_rel = _grid_minimum(sse, k)
    amp = (t * p[None, :]).sum(axis=1) / np.maximum((t * t).sum(axis=1), 1e-12)
    sse_free = np.where(amp > 0, ((p[None, :] - amp[:, None] * t) ** 2).sum(axis=1), np.inf)
    k_free = int(np.argmin(sse_free))
    return {
        "diffusion_length_rel": sigma_rel,
        "diffusion_length_m": sigma_rel * diameter_km * 500.0,
        # sigma^2 = 2 kappa t: the log is the age scale (a fresh crater's fit floors at half the grid's least sigma).
        "log10_diffusion_length_m": math.log10(max(sigma_rel, 0.5 * _FIT_SIGMA_REL[1]) * diameter_km * 500.0),
        "diffusion_fit_rms_rel": float(np.sqrt(sse[k] / ok.sum())) / fresh_depth_m,
        "diffusion_length_rel_free": float(_FIT_SIGMA_REL[k_free]),
        "profile_amplitude_over_fresh": float(amp[k_free]) if np.isfinite(sse_free[k_free]) else np.nan,
    }


_NATIVE_UNITS = {
    "native_diffusion_length_rel": "1",
    "native_diffusion_length_m": "m",
    "native_log10_diffusion_length_m": "log10(m)",
    "native_fit_rms_rel": "1",
    "native_amplitude_over_fresh": "1",
    "native_diffusion_length_rel_free": "1",
}
# Native-grid fit: pixels out to this many radii (the window's reach), at least this share of them
# finite and unmasked; one reweighting pass with Huber weights at this many robust sigmas (pixels of
# craters the table does not list, or terrain the surface does not follow, count less); the surroundings
# a polynomial of this order. Order 4 rather than 2: craters on the edge of a mare basin sit on a
# smoothstep wall no quadratic follows (8-NN vote on the fitted sigma, seed-0 world, leave-one-out:
# order 2 0.927, 3 0.925, 4 0.941, 5 0.942, 6 0.942; median error of log sigma 0.0215 -> 0.0183).
_NATIVE_FIT_TO = 2.5
_NATIVE_MIN_COVER = 0.5
_NATIVE_HUBER = 1.5
_NATIVE_BACKGROUND_ORDER = 4
# Joint fit of overlapping listed neighbours: alternating rounds, and the neighbours' diffusion
# lengths searched on every other value of the crater's grid (their shapes matter, not their ages).
_NATIVE_JOINT_ROUNDS = 2
_NATIVE_NEIGHBOUR_SIGMA_REL = _FIT_SIGMA_REL[::2]


def _fresh_profile(x: np.ndarray, diameter_km: float) -> np.ndarray:
    """The fresh Pike profile (m) of a crater of this diameter at radial distances x (radii)."""
    shape = crater_shape_km(np.asarray(float(diameter_km)))
    return crater_profile_m(x, float(shape["depth_km"]) * 1000.0, float(shape["rim_height_km"]) * 1000.0,
                            float(shape["floor_diameter_km"]) / float(diameter_km),
                            float(shape["peak_height_km"]) * 1000.0).astype(float)


def _fit_neighbours(h: np.ndarray, templates: np.ndarray, design: np.ndarray,
                    neighbour_templates: list[np.ndarray]) -> np.ndarray:
    """The neighbours' part of ``h`` (the sum of each neighbour's best template): coordinate descent
    on the least-squares misfit with the ``design`` (surroundings) projected out, the crater's own
    template (one of ``templates``) and each neighbour's (one of its rows) chosen in turn."""
    q, _ = np.linalg.qr(design)

    def project(m):
        return m - (m @ q) @ q.T

    hp, own = project(h[None, :])[0], project(templates)
    others = [project(t) for t in neighbour_templates]

    def best(target, candidates):
        return int(np.argmin(((target[None, :] - candidates) ** 2).sum(axis=1)))

    k_own, k_nb = best(hp, own), [0] * len(others)
    for _ in range(_NATIVE_JOINT_ROUNDS):
        for a in range(len(others)):
            rest = sum((others[b][k_nb[b]] for b in range(len(others)) if b != a), np.zeros_like(hp))
            k_nb[a] = best(hp - own[k_own] - rest, others[a])
        k_own = best(hp - sum(others[b][k_nb[b]] for b in range(len(others))), own)
    return sum(t[k] for t, k in zip(neighbour_templates, k_nb))


def _native_diffusion_fit(win: NativeWindow, diameter_km: float, keep: np.ndarray | None,
                          neighbours: list[tuple[float, float, float]] | None = None) -> dict[str, float]:
    """The diffusion length sigma fitted on the DEM's own pixels: the fresh Pike profile of this
    diameter, evaluated at the pixel centres (the crater's own, round, local offsets) and blurred by
    a Gaussian of sigma on that grid, plus a quartic surroundings surface (its plane inside the
    rim, which the impact excavated), least squares over every pixel out to 2.5 radii (a pixel
    counts once, wherever it lies; no rings, no resampling). The fresh amplitude is fixed (sigma
    alone sets both the shape and the lost depth), then refitted with Huber weights; a free
    amplitude is fitted alongside, as in the crop fit.

    ``neighbours``: listed craters overlapping the window, (east, north offset of the centre in m,
    diameter in km) each; they are not masked (``keep`` then only holds the host mask) but fitted
    jointly: each is a fresh Pike profile of its own diameter blurred by its own diffusion length,
    the lengths found by alternating searches (crater, each neighbour in turn, _NATIVE_JOINT_ROUNDS
    times), then subtracted before the crater's final (Huber) fit."""
    from scipy import ndimage

    radius_m = diameter_km * 500.0
    x = np.hypot(win.x_m, win.y_m) / radius_m
    finite = np.isfinite(win.values)
    sel = finite & (x <= _NATIVE_FIT_TO)
    if keep is not None:
        interior = sel & (x <= _INTERIOR)
        if (keep & interior).sum() >= _MIN_UNMASKED_INTERIOR * interior.sum():
            sel &= keep
    if sel.sum() < max(12, _NATIVE_MIN_COVER * (x <= _NATIVE_FIT_TO).sum()) or not (sel & (x <= _INTERIOR)).any():
        return {}
    # Ground size of a window pixel along rows and columns (metres), from the offsets at the centre.
    r, c = np.unravel_index(np.argmin(x), x.shape)
    r, c = min(max(r, 1), x.shape[0] - 2), min(max(c, 1), x.shape[1] - 2)
    step_row = math.hypot(win.x_m[r + 1, c] - win.x_m[r, c], win.y_m[r + 1, c] - win.y_m[r, c])
    step_col = math.hypot(win.x_m[r, c + 1] - win.x_m[r, c], win.y_m[r, c + 1] - win.y_m[r, c])
    fresh_depth_m = float(crater_shape_km(np.asarray(float(diameter_km)))["depth_km"]) * 1000.0
    z = _fresh_profile(x, diameter_km)
    e = np.clip((_EXCAVATED[1] - x) / (_EXCAVATED[1] - _EXCAVATED[0]), 0.0, 1.0)
    outside = 1.0 - e * e * (3.0 - 2.0 * e)
    u, v = win.x_m / radius_m, win.y_m / radius_m
    # The surroundings: a polynomial in (u, v) of _NATIVE_BACKGROUND_ORDER, its terms above the first
    # faded out inside the rim (the plane is the excavated floor's reference).
    terms = [np.ones_like(u), u, v] + [outside * u ** (n - k) * v ** k
                                       for n in range(2, _NATIVE_BACKGROUND_ORDER + 1) for k in range(n + 1)]
    design = np.column_stack([t[sel] for t in terms])
    h = win.values[sel].astype(float)

    def blurred(profile, rad_m, sigmas, mode):
        out = np.empty((len(sigmas), h.size))
        for k, s_rel in enumerate(sigmas):
            sig = (s_rel * rad_m / step_row, s_rel * rad_m / step_col)
            out[k] = (ndimage.gaussian_filter(profile, sig, mode=mode) if max(sig) > 0.05 else profile)[sel]
        return out

    templates = blurred(z, radius_m, _FIT_SIGMA_REL, "constant")
    if neighbours:
        h = h - _fit_neighbours(h, templates, design, [
            blurred(_fresh_profile(np.hypot(win.x_m - xj, win.y_m - yj) / (dj * 500.0), dj), dj * 500.0,
                    _NATIVE_NEIGHBOUR_SIGMA_REL, "nearest") for xj, yj, dj in neighbours])

    def sse_of(weights):
        sw = np.sqrt(weights)
        q, _ = np.linalg.qr(design * sw[:, None])
        res = (h[None, :] - templates) * sw[None, :]
        res -= (res @ q) @ q.T
        return (res * res).sum(axis=1), res

    sse, res = sse_of(np.ones(h.size))
    k = int(np.argmin(sse))
    dev = np.abs(res[k])
    scale = 1.4826 * float(np.median(dev)) + 1e-6
    sse, _ = sse_of(np.minimum(1.0, _NATIVE_HUBER * scale / np.maximum(dev, 1e-12)))
    k = int(np.argmin(sse))
    sigma_rel = _grid_minimum(sse, k)
    # Free amplitude (unweighted): projected template against projected heights.
    q, _ = np.linalg.qr(design)
    hp = h - q @ (q.T @ h)
    tp = templates - (templates @ q) @ q.T
    amp = (tp @ hp) / np.maximum((tp * tp).sum(axis=1), 1e-12)
    sse_free = np.where(amp > 0, ((hp[None, :] - amp[:, None] * tp) ** 2).sum(axis=1), np.inf)
    k_free = int(np.argmin(sse_free))
    return {
        "native_diffusion_length_rel": sigma_rel,
        "native_diffusion_length_m": sigma_rel * radius_m,
        "native_log10_diffusion_length_m": math.log10(max(sigma_rel, 0.5 * _FIT_SIGMA_REL[1]) * radius_m),
        "native_fit_rms_rel": float(np.sqrt(sse[k] / h.size)) / fresh_depth_m,
        "native_amplitude_over_fresh": float(amp[k_free]) if np.isfinite(sse_free[k_free]) else np.nan,
        "native_diffusion_length_rel_free": float(_FIT_SIGMA_REL[k_free]),
    }


def _morphometry(dem: np.ndarray, pixel_m: float, diameter_km: float, rings: _Rings,
                 fresh_depth_m: float, fresh_rim_m: float, keep: np.ndarray | None = None) -> dict[str, float]:
    """``keep``: pixels not masked by neighbouring craters (None: all)."""
    from scipy import ndimage

    masked_frac = 0.0
    if keep is not None:
        interior = rings.interior & np.isfinite(dem)
        if (keep & interior).sum() >= _MIN_UNMASKED_INTERIOR * interior.sum():
            masked_frac = float(np.mean(~keep[rings.r <= _FIT_TO]))
            dem = np.where(keep, dem, np.nan)
    fitted = _surroundings_surface(dem, rings)
    if fitted is None:
        return {}
    surface, (slope_e, slope_n) = fitted
    h = dem.astype(float) - surface
    surroundings_slope = math.degrees(math.atan(math.hypot(slope_e, slope_n) / pixel_m))
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
        "neighbour_masked_frac": masked_frac,
        **_diffusion_fit(h, diameter_km, rings, fresh_depth_m),
    }


def _optical(dom: np.ndarray, rings: _Rings, keep: np.ndarray | None = None) -> dict[str, float]:
    finite = np.isfinite(dom)
    if keep is not None and (keep & finite & rings.interior).sum() >= _MIN_UNMASKED_INTERIOR * (
            finite & rings.interior).sum():
        finite = finite & keep
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


class _NeighbourMasks:
    """``masks(i)``: the keep mask of crater i (see :func:`neighbour_keep_masks`), made on demand
    (a mask per crater of a global atlas would not fit in memory). Craters are indexed in trees by
    radius class (factors of 2), each searched only as far as its largest crater can reach, so one
    huge crater does not make every query return the whole table."""

    def __init__(self, craters: pd.DataFrame, crops: CraterCrops, rings: _Rings):
        from scipy.spatial import cKDTree

        self.crops, self.rings = crops, rings
        self.lon, self.lat = craters["lon"].to_numpy(float), craters["lat"].to_numpy(float)
        self.radius_m = craters["diameter_km"].to_numpy(float) * 500.0
        self.xyz = unit_vector(self.lon, self.lat) * MOON_RADIUS_M
        self.half_diagonal_m = crops.settings.side_diameters * self.radius_m * math.sqrt(2.0)
        size_class = np.floor(np.log2(np.maximum(self.radius_m, 1e-3))).astype(int)
        self.trees = []
        for c in np.unique(size_class):
            members = np.flatnonzero(size_class == c)
            reach_m = _NEIGHBOUR_MASK_RADII * self.radius_m[members].max()
            self.trees.append((cKDTree(self.xyz[members]), members, reach_m))

    def _neighbours(self, i: int):
        radius_m = self.radius_m
        near = np.concatenate([members[tree.query_ball_point(self.xyz[i], self.half_diagonal_m[i] + reach_m)]
                               for tree, members, reach_m in self.trees] or [np.zeros(0, int)]).astype(int)
        near = near[near != i]
        if not near.size:
            return None
        x, y = _local_offsets_m(self.lon[i], self.lat[i], self.lon[near], self.lat[near])
        dist = np.hypot(x, y)
        rj_m = radius_m[near]
        # A larger neighbour is masked only short of this crater's rim (this crater may sit on its rim).
        reach = np.where(rj_m <= radius_m[i], _NEIGHBOUR_MASK_RADII * rj_m,
                         np.minimum(_NEIGHBOUR_MASK_RADII * rj_m, dist - _OWN_RIM_RADII * radius_m[i]))
        use = (dist >= rj_m) & (reach > 0.3 * rj_m) & (dist < self.half_diagonal_m[i] + reach)
        host = ((dist < rj_m) & (rj_m > 1.5 * radius_m[i])
                & (dist + self.half_diagonal_m[i] > _HOST_KEEP_RADII * rj_m))
        if not use.any() and not host.any():
            return None
        return x, y, reach, use, host, rj_m, near

    def __call__(self, i: int) -> np.ndarray | None:
        parts = self._neighbours(i)
        if parts is None:
            return None
        x, y, reach, use, host, rj_m, _ = parts
        rings = self.rings
        px = float(self.crops.pixel_size_m[i])
        return self._keep(rings.dx, rings.dy, x[use] / px, y[use] / px, reach[use] / px,
                          x[host] / px, y[host] / px, rj_m[host] / px)

    @staticmethod
    def _keep(gx, gy, xu, yu, ru, xh, yh, rh) -> np.ndarray:
        keep = np.ones(np.shape(gx), bool)
        for xj, yj, rj in zip(xu, yu, ru):
            keep &= np.hypot(gx - xj, gy - yj) > rj
        for xj, yj, rj in zip(xh, yh, rh):
            keep &= np.hypot(gx - xj, gy - yj) < _HOST_KEEP_RADII * rj
        return keep

    def native(self, i: int, x_m: np.ndarray, y_m: np.ndarray):
        """For the native-grid fit at points (metres east, north of crater i): the keep mask of the
        craters that hold crater i (None: none), and the other neighbours that reach it as
        (east, north offset in m, diameter in km), to be fitted jointly (None: none)."""
        parts = self._neighbours(i)
        if parts is None:
            return None, None
        x, y, reach, use, host, rj_m, near = parts
        keep = self._keep(x_m, y_m, x[:0], y[:0], reach[:0], x[host], y[host], rj_m[host]) if host.any() else None
        neighbours = [(float(x[k]), float(y[k]), float(rj_m[k]) / 500.0) for k in np.flatnonzero(use)]
        return keep, neighbours or None

    def at(self, i: int, x_m: np.ndarray, y_m: np.ndarray) -> np.ndarray | None:
        """The same keep mask at arbitrary points (metres east, north of crater i), e.g. the pixel
        centres of a :class:`etl.crops.NativeWindow`."""
        parts = self._neighbours(i)
        if parts is None:
            return None
        x, y, reach, use, host, rj_m, _ = parts
        return self._keep(x_m, y_m, x[use], y[use], reach[use], x[host], y[host], rj_m[host] * 1.0)


def neighbour_keep_masks(craters: pd.DataFrame, crops: CraterCrops, rings: _Rings | None = None):
    """Per crater, the (S, S) crop pixels that no *other* crater of the table covers (out to
    ``_NEIGHBOUR_MASK_RADII`` of its radius; a larger one only short of this crater's rim), or None
    when no other crater reaches the crop (or the crop is not valid). A larger crater that holds
    this one (centre within its rim; also a duplicate row of it) is not masked: its floor or wall
    is this crater's terrain, and only its rim and beyond are."""
    masks = _NeighbourMasks(craters, crops, rings or _Rings(crops.settings))
    return [masks(i) if crops.valid[i] else None for i in range(len(craters))]


def crater_attributes(craters: pd.DataFrame, crops: CraterCrops, *, units=None,
                      crater_material_units: bool = True, native_dem: list[NativeWindow | None] | None = None,
                      progress: bool = False) -> tuple[pd.DataFrame, AttributeSchema]:
    """Attributes of every crater (same order as ``craters`` and ``crops``) and their schema.

    The other craters of ``craters`` are masked out of each crater's crop
    (:func:`neighbour_keep_masks`), so the table should hold every known crater of the area
    (e.g. a catalogue and an atlas's detections), not only the ones of interest.
    Morphometry columns exist when the crops have a DEM, optical ones when they have a DOM,
    stratigraphy ones when ``units`` (an :class:`etl.geology.UnitSource`) is given; with
    ``crater_material_units=False`` crater-material units are ignored and their columns
    dropped. ``native_dem`` (:func:`etl.crops.native_windows` of the DEM, same order) adds the
    diffusion length fitted on the DEM's own pixels (``native_*``), NaN where a window is None.
    Measured values are NaN where a crop is not valid.
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
    if native_dem is not None:
        if len(native_dem) != n:
            raise ValueError(f"{n} craters but {len(native_dem)} native DEM windows")
        measured.update({k: np.full(n, np.nan) for k in _NATIVE_UNITS})
        all_units += list(_NATIVE_UNITS.values())
    fresh_depth_m = scaling["fresh_depth_km"].to_numpy() * 1000.0
    fresh_rim_m = scaling["fresh_rim_height_km"].to_numpy() * 1000.0
    keep = _NeighbourMasks(craters, crops, rings) if measured and n else (lambda i: None)
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="crater attributes", unit="crater")
    for i in iterator:
        if not crops.valid[i]:
            continue
        values, mask = {}, keep(i)
        if crops.dem_m is not None:
            values.update(_morphometry(crops.dem_m[i], float(crops.pixel_size_m[i]), diameter_km[i], rings,
                                       fresh_depth_m[i], fresh_rim_m[i], mask))
        if crops.dom is not None:
            values.update(_optical(crops.dom[i], rings, mask))
        if native_dem is not None and native_dem[i] is not None:
            win = native_dem[i]
            if hasattr(keep, "native"):
                host_keep, neighbours = keep.native(i, win.x_m, win.y_m)
            else:
                host_keep, neighbours = None, None
            values.update(_native_diffusion_fit(win, diameter_km[i], host_keep, neighbours))
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
