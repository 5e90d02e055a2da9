"""A synthetic lunar study area: DOM, DEM, geologic units and a crater catalogue with true ages.

The world is built the way the Moon built it, oldest first:

1. background terrain: fractal (power spectrum ~ 1/f^beta), with gentle basins
   where the maria will be;
2. geologic units: smooth random blobs, thresholded (0 = highlands, surface age
   ``max_age_ga``; 1 = maria, flooded at ``mare_age_ga``);
3. craters: centres uniform over the area, diameters from a truncated power law
   (cumulative N(>D) ~ D^-sfd_slope), profiles after Pike (1977) (bowls with
   d/D ~ 0.2 and raised rims below ``complex_transition_km``; flat floors,
   central peaks and shallower d/D above), ejecta ~ (r/R)^-3; ages drawn per
   age class, never older than the surface the crater sits on;
4. time runs from ``max_age_ga`` to 0 in ``n_diffusion_steps`` steps. Each step
   diffuses the whole DEM with the heat kernel exp(-kappa dtau |k|^2) (a DCT, so
   the map edges are no-flux walls instead of wrapping around), then stamps the
   craters formed during the step, each pre-blurred by the diffusion between its
   formation and the step's end. Impacts degrade the surface, so diffusion runs
   on the flux-weighted *effective* time tau of ``etl.chronology`` (Neukum et al.
   2001; Fassett & Thomson 2014), kappa being today's diffusivity: the heavy
   early bombardment leaves pre-Nectarian craters far more degraded than
   Imbrian ones (``degradation_law="linear"``, tau = age, is the world of
   earlier releases). Diffusion is linear in the DEM, so every crater suffers
   exactly kappa x tau(its age), and younger craters sit on (and excavate)
   older ones. When time reaches ``mare_age_ga`` the maria flood, keeping only a
   ghost of the older relief;
5. the DOM: a Lambertian hillshade of the DEM (configurable sun) times an albedo
   map (maria dark; Copernican craters bright, with rays that fade with age).

Lengths: ``pixel_size_m`` is the map (projected) pixel size of the simple
cylindrical grid; it is true on the ground north-south, and east-west at the
equator (at latitude phi a pixel spans ``pixel_size_m * cos(phi)`` east-west,
which the crater shapes, the diffusion and the hillshade all honour).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft
from scipy import ndimage
from scipy.spatial import cKDTree

from etl.age_classes import AgeClass
from etl.chronology import DEGRADATION_LAWS, effective_time_ga
from etl.moon import MOON_RADIUS_M, unit_vector
from etl.provenance import code_version

#: Nodata values written into the GeoTIFFs (valid DOM pixels are 1..255).
DOM_NODATA = 0
DEM_NODATA = -32768.0
UNITS_NODATA = 255
#: Geologic unit codes in units.tif and the catalogue's ``unit`` column.
UNIT_HIGHLANDS = 0
UNIT_MARIA = 1
UNIT_NAMES = {UNIT_HIGHLANDS: "highlands", UNIT_MARIA: "maria"}

#: Ejecta is stamped out to this many crater radii (it is ~4 % of the rim height there).
EJECTA_REACH_RADII = 3.0
#: Inside this fraction of the radius a new crater erases the older relief completely
#: (excavation); it fades to nothing just past the rim.
ERASE_INNER_FRAC, ERASE_OUTER_FRAC = 0.8, 1.05
#: A younger, larger crater whose rim encloses an older crater's centre within this
#: fraction of its radius has obliterated it (the centre lies where the newcomer excavated):
#: the older one leaves the catalogue.
OBLITERATION_FRAC = 0.9
#: Reach of the rays of fresh craters, in radii, and the largest ray window, in pixels.
RAY_REACH_RADII, RAY_MAX_REACH_PX = 10.0, 600


#: Defaults that depend on the degradation law (WorldParams fields left None take these).
#: flux: today's diffusivity 2.5 m^2/Myr is ~4 m^2/Myr averaged over a 3.5 Ga mare (tau = 5.7 Ga), the
#: order Fassett & Thomson (2014) measure for km-sized craters; most craters form pre-Nectarian (as on the
#: Moon) and most of those are erased, so pNc gets half the draws and the catalogue keeps ~100-150 of them
#: next to ~150-330 of each younger class; the density keeps ~1,000 catalogued craters on 2048 x 2048 px.
#: linear: the world of earlier releases (diffusivity 15 makes the age signal clear at 100 m/px;
#: classes balanced), so its figures stay reproducible.
LAW_DEFAULTS: dict[str, dict] = {
    "flux": {"diffusivity_m2_per_myr": 2.5, "age_class_weights": (0.5, 0.15, 0.15, 0.1, 0.1),
             "crater_density_per_mpx": 350.0},
    "linear": {"diffusivity_m2_per_myr": 15.0, "age_class_weights": (0.2, 0.2, 0.2, 0.2, 0.2),
               "crater_density_per_mpx": 250.0},
}


@dataclass(frozen=True)
class WorldParams:
    """Everything that defines a world; with the seed it reproduces the world exactly."""

    size_px: int = 1024                      # width in pixels (height too unless height_px)
    height_px: int | None = None
    pixel_size_m: float = 100.0              # map pixel size (see module docstring)
    center_lon_deg: float = 0.0
    center_lat_deg: float = 0.0
    seed: int = 0
    n_craters: int | None = None             # None: crater_density_per_mpx x area
    crater_density_per_mpx: float | None = None  # craters >= min_diameter_px per million pixels; None: per law
    min_diameter_px: float = 8.0
    max_diameter_px: float | None = None     # None: a quarter of the smaller side
    sfd_slope: float = 2.0                   # cumulative N(>D) ~ D^-sfd_slope
    complex_transition_km: float = 15.0      # simple -> complex craters on the Moon (15-20 km)
    max_age_ga: float = 4.4                  # age of the highland surface
    mare_age_ga: float = 3.5                 # maria flood then: craters on maria are younger
    mare_fraction: float = 0.3               # share of the area that is maria
    unit_scale_px: float | None = None       # size of the unit blobs; None: a fifth of the smaller side
    # Probability of each age class, oldest first; classes older than a crater's surface are excluded and
    # the rest renormalised. None: per law (see LAW_DEFAULTS).
    age_class_weights: tuple[float, ...] | None = None
    # Today's topographic diffusivity, m^2/Myr; a crater suffers it over its effective time (see
    # degradation_law). None: per law (see LAW_DEFAULTS).
    diffusivity_m2_per_myr: float | None = None
    # "flux": diffusion over the flux-weighted time of the Neukum chronology (etl.chronology);
    # "linear": diffusion proportional to age (worlds made before the flux law; world.json without
    # this field means "linear").
    degradation_law: str = "flux"
    n_diffusion_steps: int = 6               # global diffusion steps (craters are exact regardless)
    terrain_rms_m: float = 150.0             # RMS of the fractal background
    terrain_beta: float = 3.0                # its power-spectrum slope
    basin_depth_m: float = 500.0             # maria lie in basins this deep
    mare_relief_kept: float = 0.06           # share of pre-mare relief that shows through the lava
    sun_azimuth_deg: float = 270.0           # clockwise from north (270: sun in the west)
    sun_elevation_deg: float = 25.0
    albedo_highlands: float = 0.30
    albedo_maria: float = 0.14
    min_visible_fraction: float = 0.15       # craters degraded below this share of fresh depth are not catalogued

    def __post_init__(self):
        # Fields left to the law take its defaults, so world.json always records the values used.
        for name, value in LAW_DEFAULTS.get(self.degradation_law, {}).items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.age_class_weights is not None:
            object.__setattr__(self, "age_class_weights", tuple(float(w) for w in self.age_class_weights))

    @property
    def width_px(self) -> int:
        return int(self.size_px)

    @property
    def rows_px(self) -> int:
        return int(self.height_px or self.size_px)

    def resolved_max_diameter_px(self) -> float:
        return float(self.max_diameter_px or min(self.width_px, self.rows_px) / 4.0)

    def validate(self) -> None:
        if self.degradation_law not in DEGRADATION_LAWS:
            raise ValueError(f"degradation_law must be one of {DEGRADATION_LAWS}, got {self.degradation_law!r}")
        if self.width_px < 32 or self.rows_px < 32:
            raise ValueError(f"world too small ({self.width_px} x {self.rows_px} px): use at least 32 x 32")
        if not self.pixel_size_m > 0:
            raise ValueError(f"pixel_size_m must be positive, got {self.pixel_size_m}")
        if not 2.0 <= self.min_diameter_px < self.resolved_max_diameter_px():
            raise ValueError(f"need 2 <= min_diameter_px < max_diameter_px, got {self.min_diameter_px}, "
                             f"{self.resolved_max_diameter_px()}")
        half_height_deg = math.degrees(self.rows_px * self.pixel_size_m / 2.0 / MOON_RADIUS_M)
        if abs(self.center_lat_deg) + half_height_deg > 85.0:
            raise ValueError("the world reaches beyond latitude 85 degrees, where a simple cylindrical map "
                             "is no use; move center_lat_deg or make it smaller")
        width_deg = math.degrees(self.width_px * self.pixel_size_m / MOON_RADIUS_M)
        if width_deg >= 360.0:
            raise ValueError(f"the world is {width_deg:.0f} degrees wide; it must be less than 360")
        if len(self.age_class_weights) != len(AgeClass) or min(self.age_class_weights) < 0:
            raise ValueError(f"age_class_weights needs {len(AgeClass)} non-negative weights, oldest class first")
        if not AgeClass.IMBRIAN.end_ga < self.mare_age_ga <= self.max_age_ga <= AgeClass.PRE_NECTARIAN.start_ga:
            raise ValueError("need 3.2 < mare_age_ga <= max_age_ga <= 4.5 (maria are Imbrian-age surfaces)")
        if not 0.0 <= self.mare_fraction < 1.0:
            raise ValueError(f"mare_fraction must be in [0, 1), got {self.mare_fraction}")


@dataclass
class SyntheticWorld:
    """A generated world in memory (nothing written)."""

    params: WorldParams
    crs_wkt: str
    transform: tuple[float, ...]   # GDAL/rasterio affine (a, b, c, d, e, f)
    dem_m: np.ndarray              # float32 (rows, cols), metres
    dom: np.ndarray                # uint8 (rows, cols), 1..255
    units: np.ndarray              # uint8 (rows, cols), UNIT_HIGHLANDS / UNIT_MARIA
    craters: pd.DataFrame          # every crater stamped, with ``catalogued`` saying who is listed

    @property
    def catalogue(self) -> pd.DataFrame:
        """The craters a mapper would list: visible and not obliterated by younger ones."""
        return self.craters[self.craters["catalogued"]].reset_index(drop=True)


@dataclass(frozen=True)
class WorldSummary:
    """What ``generate_world`` wrote."""

    out_dir: Path
    dom_path: Path
    dem_path: Path
    units_path: Path
    catalogue_path: Path
    craters_path: Path
    world_json_path: Path
    n_craters_catalogued: int
    n_craters_stamped: int
    size_px: tuple[int, int]        # (width, height)
    pixel_size_m: float
    counts_by_age_class: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------- grid


def world_crs(center_lon_deg: float):
    """The world's map CRS: simple cylindrical on the lunar sphere, centred on its longitude."""
    from etl.geometry import simple_cylindrical_crs

    return simple_cylindrical_crs(center_lon_deg)


def world_grid(p: WorldParams):
    """The world's PixelGrid: simple cylindrical, ``pixel_size_m`` map pixels, centred on the
    requested longitude/latitude."""
    from affine import Affine

    from etl.geometry import PixelGrid

    crs = world_crs(p.center_lon_deg)
    probe = PixelGrid(crs, Affine.identity(), 1, 1)
    xc, yc = probe.lonlat_to_xy(p.center_lon_deg, p.center_lat_deg)
    w, h, px = p.width_px, p.rows_px, p.pixel_size_m
    transform = Affine(px, 0.0, float(xc) - w * px / 2.0, 0.0, -px, float(yc) + h * px / 2.0)
    return PixelGrid(crs, transform, w, h)


# --------------------------------------------------------------------------- fields


def _fractal_field(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> np.ndarray:
    """Zero-mean, unit-RMS noise with power spectrum ~ |k|^-beta (float32)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    spec = scipy.fft.rfft2(noise, workers=-1)
    ky = scipy.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    kx = scipy.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    k = np.sqrt(kx * kx + ky * ky)
    k[0, 0] = np.inf  # no mean
    spec *= k ** (-beta / 2.0)
    out = scipy.fft.irfft2(spec, s=shape, workers=-1).astype(np.float32)
    return out / max(float(out.std()), 1e-12)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Zero-mean, unit-RMS Gaussian-correlated blobs of size ~ scale_px (float32)."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    spec = scipy.fft.rfft2(noise, workers=-1)
    ky = scipy.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    kx = scipy.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    sigma = scale_px / 2.0
    spec *= np.exp(-2.0 * (np.pi * sigma) ** 2 * (kx * kx + ky * ky))  # Gaussian blur, in Fourier space
    spec[0, 0] = 0.0
    out = scipy.fft.irfft2(spec, s=shape, workers=-1).astype(np.float32)
    return out / max(float(out.std()), 1e-12)


class _Diffuser:
    """Linear topographic diffusion of a whole DEM: the heat kernel exp(-kappa t |k|^2) applied in a
    cosine basis (DCT-II), which is the exact solution with no-flux (reflecting) map edges."""

    def __init__(self, shape: tuple[int, int], dy_m: float, dx_m: float, kappa_m2_per_myr: float):
        rows, cols = shape
        self.ky2 = (np.pi * np.arange(rows) / (rows * dy_m)) ** 2
        self.kx2 = (np.pi * np.arange(cols) / (cols * dx_m)) ** 2
        self.kappa = kappa_m2_per_myr

    def __call__(self, dem: np.ndarray, dt_myr: float) -> np.ndarray:
        if dt_myr <= 0:
            return dem
        c = scipy.fft.dctn(dem, type=2, norm="ortho", workers=-1)
        # The kernel is separable: exp(-a (kx^2 + ky^2)) = exp(-a ky^2) exp(-a kx^2).
        c *= np.exp(-self.kappa * dt_myr * self.ky2).astype(np.float32)[:, None]
        c *= np.exp(-self.kappa * dt_myr * self.kx2).astype(np.float32)[None, :]
        return scipy.fft.idctn(c, type=2, norm="ortho", workers=-1).astype(np.float32)


# --------------------------------------------------------------------------- craters


def crater_shape_km(diameter_km, complex_transition_km: float = 15.0) -> dict[str, np.ndarray]:
    """Fresh-crater morphometry after Pike (1977): depth (rim crest to floor) and rim height, km;
    floor diameter and central-peak height for complex craters."""
    d = np.asarray(diameter_km, dtype=float)
    is_complex = d >= complex_transition_km
    depth = np.where(is_complex, 1.044 * d ** 0.301, 0.196 * d ** 1.010)
    rim = np.where(is_complex, 0.236 * d ** 0.399, 0.036 * d ** 1.014)
    floor = np.where(is_complex, np.minimum(0.187 * d ** 1.249, 0.6 * d), 0.0)
    peak = np.where(is_complex, 0.35 * depth, 0.0)
    return {"depth_km": depth, "rim_height_km": rim, "floor_diameter_km": floor,
            "peak_height_km": peak, "complex": is_complex}


def crater_profile_m(x: np.ndarray, depth_m: float, rim_height_m: float, floor_frac: float = 0.0,
                     peak_height_m: float = 0.0) -> np.ndarray:
    """Elevation change of a fresh crater, metres, at normalised radius x = r / R (R = rim radius).

    Inside: a paraboloid bowl rising from the floor (rim_height - depth) to the rim crest, with a
    flat floor out to ``floor_frac`` and a cosine central peak for complex craters. Outside:
    ejecta thinning as (r/R)^-3, tapered to zero at ``EJECTA_REACH_RADII``.
    """
    x = np.asarray(x, dtype=np.float32)
    s = np.clip((x - floor_frac) / max(1.0 - floor_frac, 1e-6), 0.0, 1.0)
    inside = rim_height_m - depth_m * (1.0 - s * s)
    if peak_height_m > 0:
        peak_r = 0.2
        inside = inside + peak_height_m * 0.5 * (1 + np.cos(np.pi * np.minimum(x / peak_r, 1.0)))
    tail = EJECTA_REACH_RADII ** -3.0
    xe = np.maximum(x, 1.0)
    outside = rim_height_m * np.clip((xe ** -3.0 - tail) / (1.0 - tail), 0.0, None)
    return np.where(x <= 1.0, inside, outside).astype(np.float32)


def _sample_diameters_px(rng, n: int, d_min: float, d_max: float, slope: float) -> np.ndarray:
    """Inverse-CDF draw from N(>D) ~ D^-slope truncated to [d_min, d_max]."""
    u = rng.random(n)
    a, b = d_min ** -slope, d_max ** -slope
    return (a - u * (a - b)) ** (-1.0 / slope)


def _sample_ages_ga(rng, surface_age_ga: np.ndarray, weights) -> np.ndarray:
    """Per crater: an age class among those younger than its surface (weights renormalised),
    then an age uniform within the part of the class younger than the surface."""
    ages = np.empty(len(surface_age_ga))
    w = np.asarray(weights, dtype=float)
    for surface in np.unique(surface_age_ga):
        sel = np.flatnonzero(surface_age_ga == surface)
        allowed = np.array([c.end_ga < surface for c in AgeClass]) & (w > 0)
        if not allowed.any():
            raise ValueError(f"no age class with positive weight is younger than a {surface} Ga surface")
        p = np.where(allowed, w, 0.0)
        cls = rng.choice(len(AgeClass), size=len(sel), p=p / p.sum())
        lo = np.array([AgeClass(c).end_ga for c in cls])
        hi = np.minimum([AgeClass(c).start_ga for c in cls], surface)
        ages[sel] = lo + rng.random(len(sel)) * (hi - lo)
    return ages


def _place_craters(rng, p: WorldParams, row_lat: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres (col, row) in pixel coordinates, uniform per unit of lunar surface area
    (rows nearer the equator cover more ground, so they get proportionally more craters)."""
    w, h = p.width_px, p.rows_px
    cos_lat = np.cos(np.radians(row_lat))
    cols, rows = np.empty(0), np.empty(0)
    while len(cols) < n:
        c = rng.random(2 * n) * w
        r = rng.random(2 * n) * h
        keep = rng.random(2 * n) < cos_lat[np.minimum(r.astype(int), h - 1)] / cos_lat.max()
        cols, rows = np.concatenate([cols, c[keep]]), np.concatenate([rows, r[keep]])
    return cols[:n], rows[:n]


def _stamp_crater(dem: np.ndarray, col: float, row: float, radius_px: float, cos_lat: float,
                  shape: dict, blur_sigma_px: float) -> None:
    """Add one crater to ``dem`` in place: excavate (erase older relief inside the rim, relative
    to the local pre-impact plane), add the fresh profile and ejecta, pre-blurred by diffusion."""
    rows, cols = dem.shape
    reach = EJECTA_REACH_RADII * radius_px + 3.0 * blur_sigma_px + 2.0
    reach_x = reach / cos_lat  # east-west pixels are shorter on the ground by cos(lat)
    r0, r1 = max(int(row - reach), 0), min(int(math.ceil(row + reach)) + 1, rows)
    c0, c1 = max(int(col - reach_x), 0), min(int(math.ceil(col + reach_x)) + 1, cols)
    if r0 >= r1 or c0 >= c1:
        return
    dy = (np.arange(r0, r1, dtype=np.float32) + 0.5 - row)[:, None]
    dx = ((np.arange(c0, c1, dtype=np.float32) + 0.5 - col) * cos_lat)[None, :]
    x = np.sqrt(dx * dx + dy * dy) / radius_px
    old = dem[r0:r1, c0:c1]
    # Pre-impact plane from the terrain under the crater (so craters on slopes stay on slopes).
    under = x <= 1.2
    dxs, dys = np.broadcast_to(dx, x.shape)[under], np.broadcast_to(dy, x.shape)[under]
    a = np.column_stack([np.ones_like(dxs), dxs, dys])
    if len(dxs) >= 3:
        coef = np.linalg.lstsq(a, old[under], rcond=None)[0]
        plane = coef[0] + coef[1] * dx + coef[2] * dy
    else:
        plane = np.full(x.shape, float(old[under].mean()) if under.any() else float(old.mean()), np.float32)
    erase = np.clip((ERASE_OUTER_FRAC - x) / (ERASE_OUTER_FRAC - ERASE_INNER_FRAC), 0.0, 1.0)
    erase = erase * erase * (3 - 2 * erase)  # smoothstep
    z = crater_profile_m(x, shape["depth_m"], shape["rim_height_m"], shape["floor_frac"], shape["peak_height_m"])
    delta = erase * (plane - old) + z
    if blur_sigma_px > 0.25:
        delta = ndimage.gaussian_filter(delta, sigma=(blur_sigma_px, blur_sigma_px / cos_lat), mode="constant")
    dem[r0:r1, c0:c1] = old + delta.astype(np.float32)


def _ray_brightening(alb: np.ndarray, col: float, row: float, radius_px: float, cos_lat: float,
                     strength: float, rng: np.random.Generator) -> None:
    """Multiply ``alb`` in place by a bright halo and radial rays around a fresh crater."""
    rows, cols = alb.shape
    reach = min(RAY_REACH_RADII * radius_px, RAY_MAX_REACH_PX)
    reach_x = reach / cos_lat
    r0, r1 = max(int(row - reach), 0), min(int(math.ceil(row + reach)) + 1, rows)
    c0, c1 = max(int(col - reach_x), 0), min(int(math.ceil(col + reach_x)) + 1, cols)
    if r0 >= r1 or c0 >= c1:
        return
    # Rays are smooth on the scale of a fifth of the radius: big craters are drawn on a coarser
    # lattice and interpolated back (keeps a 100 km crater's rays cheap).
    step = max(1, int(radius_px / 5.0))
    ys = np.arange(r0, r1, step, dtype=np.float32) + 0.5 - row
    xs = (np.arange(c0, c1, step, dtype=np.float32) + 0.5 - col) * cos_lat
    dy, dx = ys[:, None] / radius_px, xs[None, :] / radius_px  # in radii, east and south
    x = np.sqrt(dx * dx + dy * dy)
    halo = np.exp(-np.maximum(x - 1.0, 0.0) ** 2 / 0.8)  # bright immature ejecta and walls
    rays = np.zeros_like(x)
    for _ in range(int(rng.integers(6, 15))):
        az = rng.uniform(-np.pi, np.pi)
        half_width = rng.uniform(0.2, 0.5)           # radii, roughly constant along the ray
        length = rng.uniform(0.4, 1.0) * RAY_REACH_RADII
        along = dx * math.cos(az) + dy * math.sin(az)
        lateral = dy * math.cos(az) - dx * math.sin(az)
        fade = np.clip(1.0 - (along - 1.0) / (length - 1.0), 0.0, 1.0) * (along > 1.0)
        rays = np.maximum(rays, np.exp(-0.5 * (lateral / half_width) ** 2) * fade)
    gain = 1.0 + strength * (0.9 * halo + 0.6 * rays)
    if step > 1:
        gain = ndimage.zoom(gain, step, order=1, grid_mode=True, mode="nearest")
    alb[r0:r1, c0:c1] *= gain[: r1 - r0, : c1 - c0].astype(np.float32)


def _hillshade(dem: np.ndarray, pixel_size_m: float, row_cos_lat: np.ndarray, azimuth_deg: float,
               elevation_deg: float) -> np.ndarray:
    """Lambertian shading cos(angle between surface normal and sun), 0 in shadow-facing slopes."""
    dz_drow, dz_dcol = np.gradient(dem.astype(np.float32))
    dz_de = dz_dcol / (pixel_size_m * row_cos_lat.astype(np.float32)[:, None])
    dz_dn = -dz_drow / pixel_size_m  # rows run south
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))  # east, north, up
    shade = (-dz_de * sun[0] - dz_dn * sun[1] + sun[2]) / np.sqrt(1.0 + dz_de ** 2 + dz_dn ** 2)
    return np.clip(shade, 0.0, None)


def _expected_depth_fraction(radius_m: np.ndarray, sigma_m: np.ndarray) -> np.ndarray:
    """Share of its fresh depth a crater keeps after diffusion of length sigma: the crater seen as a
    Gaussian depression of width R/2, whose amplitude diffusion scales by s^2 / (s^2 + sigma^2)."""
    s2 = (0.5 * radius_m) ** 2
    return s2 / (s2 + sigma_m ** 2)


def synthesize_world(params: WorldParams | None = None, *, progress: bool = False, **overrides) -> SyntheticWorld:
    """Generate a world in memory (see the module docstring); ``overrides`` are WorldParams fields."""
    from tqdm import tqdm

    p = WorldParams(**{**(asdict(params) if params else {}), **overrides}) if overrides else (params or WorldParams())
    p.validate()
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(p.seed).spawn(6)]
    rng_terrain, rng_units, rng_craters, rng_ages, rng_rays, rng_noise = rngs
    shape = (p.rows_px, p.width_px)
    px = p.pixel_size_m
    grid = world_grid(p)
    _, row_lat = grid.pixel_to_lonlat(np.full(shape[0], shape[1] / 2.0), np.arange(shape[0]) + 0.5)
    row_cos = np.cos(np.radians(row_lat))
    center_cos = math.cos(math.radians(p.center_lat_deg))

    # Units, and the basins the maria fill.
    unit_scale = p.unit_scale_px or min(shape) / 5.0
    blobs = _smooth_field(rng_units, shape, unit_scale)
    if p.mare_fraction > 0:
        threshold = float(np.quantile(blobs, 1.0 - p.mare_fraction))
        units = (blobs > threshold).astype(np.uint8)
    else:
        threshold = float(blobs.max()) + 1.0
        units = np.zeros(shape, np.uint8)
    mare_soft = ndimage.gaussian_filter(units.astype(np.float32), sigma=3.0)
    dem = p.terrain_rms_m * _fractal_field(rng_terrain, shape, p.terrain_beta)
    # Basins: half depth at the mare's edge, full depth inside, so the lava lies below the highlands.
    basin = np.clip((blobs - threshold) / 0.6 + 0.5, 0.0, 1.0)
    dem -= p.basin_depth_m * (basin * basin * (3 - 2 * basin))

    # The crater population.
    d_max = p.resolved_max_diameter_px()
    n = p.n_craters if p.n_craters is not None else int(round(p.crater_density_per_mpx * shape[0] * shape[1] / 1e6))
    cols, rows = _place_craters(rng_craters, p, row_lat, n)
    diam_px = _sample_diameters_px(rng_craters, n, p.min_diameter_px, d_max, p.sfd_slope)
    ri = np.minimum(rows.astype(int), shape[0] - 1)
    ci = np.minimum(cols.astype(int), shape[1] - 1)
    unit = units[ri, ci]
    surface_age = np.where(unit == UNIT_MARIA, p.mare_age_ga, p.max_age_ga)
    age = _sample_ages_ga(rng_ages, surface_age, p.age_class_weights)
    diameter_km = diam_px * px / 1000.0  # north-south pixels are true scale
    morph = crater_shape_km(diameter_km, p.complex_transition_km)
    # Diffusion length over the crater's effective (for the flux law, flux-weighted) time.
    tau_ga = effective_time_ga(age, p.degradation_law)
    sigma_m = np.sqrt(2.0 * p.diffusivity_m2_per_myr * tau_ga * 1000.0)
    lon, lat = grid.pixel_to_lonlat(cols, rows)

    # Time steps from the oldest surface to today, with the mare flooding as one step boundary.
    edges = np.linspace(p.max_age_ga, 0.0, p.n_diffusion_steps + 1)
    if p.mare_fraction > 0:
        edges = np.unique(np.concatenate([edges, [p.mare_age_ga]]))[::-1]
    diffuse = _Diffuser(shape, px, px * center_cos, p.diffusivity_m2_per_myr)
    order = np.argsort(-age, kind="stable")
    steps = tqdm(range(len(edges) - 1), desc="synth: craters through time", unit="step", disable=not progress)
    for k in steps:
        t_hi, t_lo = edges[k], edges[k + 1]
        tau_lo_ga = float(effective_time_ga(t_lo, p.degradation_law))
        dem = diffuse(dem, (float(effective_time_ga(t_hi, p.degradation_law)) - tau_lo_ga) * 1000.0)
        in_step = order[(age[order] <= t_hi) & (age[order] > t_lo)] if k else order[(age[order] > t_lo)]
        for i in in_step:
            blur_m = math.sqrt(2.0 * p.diffusivity_m2_per_myr * max(tau_ga[i] - tau_lo_ga, 0.0) * 1000.0)
            shape_i = {"depth_m": morph["depth_km"][i] * 1000.0, "rim_height_m": morph["rim_height_km"][i] * 1000.0,
                       "floor_frac": morph["floor_diameter_km"][i] / diameter_km[i],
                       "peak_height_m": morph["peak_height_km"][i] * 1000.0}
            _stamp_crater(dem, cols[i], rows[i], diam_px[i] / 2.0, float(row_cos[ri[i]]), shape_i, blur_m / px)
        if p.mare_fraction > 0 and math.isclose(t_lo, p.mare_age_ga):
            # Lava fills the basins to a low level; a ghost of the older relief shows through.
            level = float(np.percentile(dem[units == UNIT_MARIA], 25))
            dem = dem + mare_soft * ((level + p.mare_relief_kept * (dem - level)) - dem)

    # Who a mapper would list: not erased by diffusion, not obliterated by a younger, larger crater.
    radius_m = diam_px / 2.0 * px
    kept = _expected_depth_fraction(radius_m, sigma_m)
    xyz = unit_vector(lon, lat) * MOON_RADIUS_M
    tree = cKDTree(xyz)
    obliterated_by = np.full(n, -1)
    for j, near in enumerate(tree.query_ball_point(xyz, OBLITERATION_FRAC * radius_m)):
        for i in near:
            if age[i] > age[j] and diam_px[i] < diam_px[j]:
                if obliterated_by[i] < 0 or age[j] > age[obliterated_by[i]]:
                    obliterated_by[i] = j  # the first (oldest) younger crater that erased it
    catalogued = (kept >= p.min_visible_fraction) & (obliterated_by < 0)

    # DOM: hillshade x albedo (maria dark, fresh craters bright with rays) + a little noise.
    albedo = (p.albedo_highlands + (p.albedo_maria - p.albedo_highlands) * mare_soft).astype(np.float32)
    albedo *= 1.0 + 0.08 * _fractal_field(rng_noise, shape, 2.0)
    copernican_start = AgeClass.COPERNICAN.start_ga
    for i in np.flatnonzero(age < copernican_start)[np.argsort(-age[age < copernican_start], kind="stable")]:
        strength = (1.0 - age[i] / copernican_start) ** 1.5  # rays fade over the Copernican period
        _ray_brightening(albedo, cols[i], rows[i], diam_px[i] / 2.0, float(row_cos[ri[i]]), strength, rng_rays)
    shade = _hillshade(dem, px, row_cos, p.sun_azimuth_deg, p.sun_elevation_deg)
    gain = 110.0 / (p.albedo_highlands * math.sin(math.radians(p.sun_elevation_deg)))  # flat highland -> 110
    radiance = albedo * shade * gain + rng_noise.normal(0.0, 2.0, shape).astype(np.float32)
    dom = (1 + np.clip(np.rint(radiance), 0, 254)).astype(np.uint8)

    craters = pd.DataFrame({
        "crater_id": np.arange(n),
        "lon": lon,
        "lat": lat,
        "diameter_km": diameter_km,
        "age_ga": age,
        "age_class": [AgeClass.from_age_ga(a).code for a in age],
        "unit": [UNIT_NAMES[int(u)] for u in unit],
        "depth_m": morph["depth_km"] * 1000.0,
        "rim_height_m": morph["rim_height_km"] * 1000.0,
        "complex": morph["complex"],
        "col_px": cols,              # centre in the world's pixel grid, rasterio convention
        "row_px": rows,
        "diameter_px": diam_px,      # north-south; east-west it is diameter_px / cos(lat)
        "diffusion_length_m": sigma_m,
        "depth_kept_frac": kept,
        "obliterated_by": obliterated_by,
        "catalogued": catalogued,
    })
    return SyntheticWorld(params=p, crs_wkt=grid.crs.to_wkt(), transform=tuple(grid.transform)[:6],
                          dem_m=dem.astype(np.float32), dom=dom, units=units, craters=craters)


# --------------------------------------------------------------------------- writing


def _write_tif(path: Path, array: np.ndarray, world: SyntheticWorld, nodata, description: str, units: str = "") -> None:
    import rasterio
    from affine import Affine

    rows, cols = array.shape
    profile = dict(driver="GTiff", width=cols, height=rows, count=1, dtype=array.dtype.name,
                   crs=rasterio.crs.CRS.from_wkt(world.crs_wkt), transform=Affine(*world.transform),
                   nodata=nodata, compress="deflate")
    if rows >= 256 and cols >= 256:  # tiled: windowed reads of a big mosaic touch few blocks
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(array, 1)
        ds.set_band_description(1, description)
        if units:
            ds.set_band_unit(1, units)
        ds.update_tags(generator="deepcraters synth", seed=str(world.params.seed))


def write_world(world: SyntheticWorld, out_dir: str | Path) -> WorldSummary:
    """Write a world: dom.tif, dem.tif, units.tif, catalogue.csv (listed craters),
    craters_all.csv (every crater stamped) and world.json (parameters and provenance)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    p = world.params
    paths = {name: out / name for name in ("dom.tif", "dem.tif", "units.tif", "catalogue.csv",
                                           "craters_all.csv", "world.json")}
    _write_tif(paths["dom.tif"], world.dom, world, DOM_NODATA, "orthophoto (hillshade x albedo)")
    _write_tif(paths["dem.tif"], world.dem_m, world, DEM_NODATA, "elevation", "metre")
    _write_tif(paths["units.tif"], world.units, world, UNITS_NODATA, "geologic unit: 0 highlands, 1 maria")
    cat = world.catalogue.drop(columns=["catalogued", "obliterated_by"])
    cat.to_csv(paths["catalogue.csv"], index=False, float_format="%.10g")
    world.craters.to_csv(paths["craters_all.csv"], index=False, float_format="%.10g")
    counts = {c.code: int((cat["age_class"] == c.code).sum()) for c in AgeClass}
    meta = {
        "generator": "etl.synthetic.generate_world",
        "code_version": code_version(),
        "params": {f.name: getattr(p, f.name) for f in fields(p)},
        "resolved": {"max_diameter_px": p.resolved_max_diameter_px(), "width_px": p.width_px,
                     "height_px": p.rows_px},
        "crs": world.crs_wkt,
        "transform": list(world.transform),
        "pixel_size_m": p.pixel_size_m,
        "files": {"dom": "dom.tif", "dem": "dem.tif", "units": "units.tif", "catalogue": "catalogue.csv",
                  "craters_all": "craters_all.csv"},
        "units": {str(k): v for k, v in UNIT_NAMES.items()},
        "nodata": {"dom": DOM_NODATA, "dem": DEM_NODATA, "units": UNITS_NODATA},
        "n_craters_stamped": int(len(world.craters)),
        "n_craters_catalogued": int(len(cat)),
        "catalogued_by_age_class": counts,
    }
    meta["params"]["age_class_weights"] = list(p.age_class_weights)
    paths["world.json"].write_text(json.dumps(meta, indent=2) + "\n")
    return WorldSummary(out_dir=out, dom_path=paths["dom.tif"], dem_path=paths["dem.tif"],
                        units_path=paths["units.tif"], catalogue_path=paths["catalogue.csv"],
                        craters_path=paths["craters_all.csv"], world_json_path=paths["world.json"],
                        n_craters_catalogued=int(len(cat)), n_craters_stamped=int(len(world.craters)),
                        size_px=(p.width_px, p.rows_px), pixel_size_m=p.pixel_size_m, counts_by_age_class=counts)


def generate_world(out_dir: str | Path, *, progress: bool = False, **params) -> WorldSummary:
    """Generate a world (keyword arguments: WorldParams fields, e.g. size_px=1024, pixel_size_m=100.0,
    center_lon_deg=0.0, center_lat_deg=0.0, seed=0, n_craters=None, min_diameter_px=8.0) and write it
    to ``out_dir``. Same parameters, same files, byte for byte."""
    world = synthesize_world(WorldParams(**params), progress=progress)
    return write_world(world, out_dir)


def load_world_params(world_json: str | Path) -> WorldParams:
    """The parameters recorded in a world.json (to regenerate or extend that world)."""
    meta = json.loads(Path(world_json).read_text())
    raw = dict(meta["params"])
    raw["age_class_weights"] = tuple(raw["age_class_weights"])
    raw.setdefault("degradation_law", "linear")  # worlds written before the flux law
    return WorldParams(**raw)


__all__ = [
    "SyntheticWorld", "WorldParams", "WorldSummary", "crater_profile_m", "crater_shape_km",
    "generate_world", "load_world_params", "synthesize_world", "world_crs", "world_grid", "write_world",
]
