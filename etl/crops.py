"""Crater crops: one window per crater, centred on it, sized to it and drawn round.

Each crop is a square of side ``k x diameter`` on the ground, sampled on an S x S grid of a
local azimuthal-equidistant projection centred on the crater (on the Moon sphere, north up).
In that projection distances from the centre are great-circle distances, so the rim circle
(the same circle that :func:`etl.geometry.crater_boxes_px` projects into a mosaic for the
detector's boxes) is a circle of radius ``S / (2 k)`` pixels at any latitude; a crater at 60
degrees in a simple-cylindrical mosaic, twice as wide as tall there, comes out round.

For each crater only the source window that covers its crop is read (rasterio windowed
reads, decimated by GDAL when the crop's pixels are much larger than the source's, so a
100 km crater in a 100 m mosaic does not read 3,000 x 3,000 pixels), then resampled
bilinearly onto the crop grid. The DEM stays in metres, absolute (no per-crop scaling: the
relief is the age signal). Nodata and the outside of a mosaic become NaN, and a crater with
more than ``max_invalid_fraction`` of its crop missing is reported as not measurable
(``valid`` False with the reason), never filled with zeros. A mosaic spanning all
longitudes wraps at the antimeridian.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.enums import Resampling
from rasterio.windows import Window
from scipy import ndimage

from etl.geometry import PixelGrid
from etl.moon import MOON_RADIUS_M, normalize_lon
from etl.rasters import open_raster, read_window

__all__ = ["CraterCrops", "CropSettings", "NativeWindow", "extract_crops", "extract_layer", "local_lonlat",
           "local_offsets_m", "native_windows"]

# A bilinear sample is kept when at least this share of its interpolation weight falls on
# valid source pixels (the value is renormalised over them): edges of nodata do not bleed,
# and a crop does not lose a half-pixel ring at every nodata boundary.
_MIN_VALID_WEIGHT = 0.5
# Band units (GDAL metadata) that mean kilometres; anything else is taken as metres.
_KM_UNITS = {"km", "kilometre", "kilometer", "kilometres", "kilometers"}


@dataclass(frozen=True)
class CropSettings:
    """Crop geometry."""

    size_px: int = 64             # S: every crop is resampled to S x S pixels
    side_diameters: float = 3.0   # k: crop side = k x diameter; k = 3 reaches 3 radii from the centre
                                  #    (rim at 1 R, ejecta annulus 1-2 R, surroundings 2-3 R)

    def __post_init__(self):
        if int(self.size_px) < 4:
            raise ValueError(f"size_px must be >= 4, got {self.size_px}")
        if not self.side_diameters > 1.0:
            raise ValueError(f"side_diameters must be > 1 (the crop must contain the rim), got {self.side_diameters}")

    @property
    def radius_px(self) -> float:
        """Rim radius in crop pixels (the same for every crater): S / (2 k)."""
        return self.size_px / (2.0 * self.side_diameters)

    def radius_grid(self) -> np.ndarray:
        """(S, S) distance of every crop pixel centre from the crater centre, in crater radii."""
        offsets = np.arange(self.size_px) + 0.5 - self.size_px / 2.0
        return np.hypot(offsets[None, :], offsets[:, None]) / self.radius_px


@dataclass
class CraterCrops:
    """Crops of N craters, in the order of the input table."""

    dom: np.ndarray | None        # float32 (N, S, S): DOM values as stored (NaN where nodata / outside)
    dem_m: np.ndarray | None      # float32 (N, S, S): elevation in metres, absolute as in the DEM
    pixel_size_m: np.ndarray      # float64 (N,): ground metres per crop pixel (= k * D * 1000 / S)
    valid: np.ndarray             # bool (N,): False = crater not measurable (mosaic edge, nodata)
    reasons: list[str]            # '' when valid, else why
    settings: CropSettings
    invalid_fraction: dict[str, np.ndarray] = field(default_factory=dict)  # layer -> (N,) share of NaN pixels

    def __len__(self) -> int:
        return len(self.valid)


def local_lonlat(lon0_deg, lat0_deg, x_m, y_m, radius_m: float = MOON_RADIUS_M) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of the azimuthal-equidistant projection centred on (lon0, lat0) on the sphere:
    x east, y north, metres -> lon (-180..180), lat, degrees. The point lies at great-circle
    distance hypot(x, y) from the centre, at azimuth atan2(x, y) clockwise from north
    (the destination-point formula, as in :func:`etl.geometry.rim_lonlat`). Arrays broadcast."""
    lon0, lat0 = np.radians(np.asarray(lon0_deg, dtype=float)), np.radians(np.asarray(lat0_deg, dtype=float))
    x, y = np.asarray(x_m, dtype=float), np.asarray(y_m, dtype=float)
    delta = np.hypot(x, y) / radius_m
    azimuth = np.arctan2(x, y)
    sin_lat = np.sin(lat0) * np.cos(delta) + np.cos(lat0) * np.sin(delta) * np.cos(azimuth)
    lat = np.arcsin(np.clip(sin_lat, -1.0, 1.0))
    lon = lon0 + np.arctan2(np.sin(azimuth) * np.sin(delta) * np.cos(lat0), np.cos(delta) - np.sin(lat0) * sin_lat)
    return np.asarray(normalize_lon(np.degrees(lon))), np.degrees(lat)


def local_offsets_m(lon0_deg: float, lat0_deg: float, lon_deg, lat_deg,
                    radius_m: float = MOON_RADIUS_M) -> tuple[np.ndarray, np.ndarray]:
    """East and north offsets, metres, of points in the azimuthal-equidistant projection centred on
    (lon0, lat0): the forward of :func:`local_lonlat`."""
    lat0, lon0 = math.radians(lat0_deg), math.radians(lon0_deg)
    lat, dlon = np.radians(np.asarray(lat_deg, float)), np.radians(np.asarray(lon_deg, float)) - lon0
    cos_delta = np.sin(lat0) * np.sin(lat) + np.cos(lat0) * np.cos(lat) * np.cos(dlon)
    delta = np.arccos(np.clip(cos_delta, -1.0, 1.0)) * radius_m
    azimuth = np.arctan2(np.sin(dlon) * np.cos(lat),
                         np.cos(lat0) * np.sin(lat) - np.sin(lat0) * np.cos(lat) * np.cos(dlon))
    return delta * np.sin(azimuth), delta * np.cos(azimuth)


class _Layer:
    """One open raster and the way to sample crops from it."""

    def __init__(self, name: str, path, assume_crs, unit_m: float | None):
        self.name = name
        self.ds = open_raster(path, assume_crs=assume_crs)
        self.grid = PixelGrid.from_dataset(self.ds, assume_crs=assume_crs)
        if unit_m is None:
            unit = (self.ds.units[0] or "").strip().lower() if self.ds.units else ""
            unit_m = 1000.0 if unit in _KM_UNITS else 1.0
        self.unit_m = float(unit_m)
        # Layers with equal keys share pixel coordinates (a DOM and DEM on one grid).
        self.grid_key = (self.grid.crs.to_wkt(), tuple(self.grid.transform), self.grid.width, self.grid.height)
        # A cylindrical mosaic whose width is the whole circle wraps at its seam.
        period = self.grid._x_period()
        self.period_px = None
        if period is not None:
            width_x = abs(self.grid.transform.a) * self.grid.width
            if abs(width_x - period) <= abs(self.grid.transform.a):
                self.period_px = period / abs(self.grid.transform.a)

    def close(self):
        self.ds.close()

    def pixels(self, lon_deg: np.ndarray, lat_deg: np.ndarray, lon_c: float, lat_c: float):
        """(cols, rows, centre col) of lon/lat samples and of the crater centre in this grid."""
        cols, rows = self.grid.lonlat_to_pixel(lon_deg, lat_deg)
        col_c, _ = self.grid.lonlat_to_pixel(lon_c, lat_c)
        return cols, rows, col_c

    def sample(self, lon_deg: np.ndarray, lat_deg: np.ndarray, lon_c: float, lat_c: float,
               size_px: int, categorical: bool = False, pixels=None) -> np.ndarray:
        """Bilinear samples (S, S) at lon/lat, NaN where no valid source covers them.
        ``categorical`` (class codes such as geologic units): nearest neighbour, and the
        most common code where the read is decimated, never a blend of codes."""
        cols, rows, col_c = pixels if pixels is not None else self.pixels(lon_deg, lat_deg, lon_c, lat_c)
        if self.period_px is not None:
            # Keep every sample on the crater's side of the seam.
            p = self.period_px
            cols = col_c + (cols - col_c + p / 2.0) % p - p / 2.0
        out = np.full((size_px, size_px), np.nan, dtype=np.float32)
        finite = np.isfinite(cols) & np.isfinite(rows)
        if not finite.any():
            return out
        # Decimate the read where the crop's pixels span several source pixels (GDAL averages,
        # so big craters are anti-aliased and read little); measured along the crop's central
        # row and column, which never cross a pole.
        mid = size_px // 2
        span_c = np.nanmax(cols[mid]) - np.nanmin(cols[mid]) if finite[mid].all() else 0.0
        span_r = np.nanmax(rows[:, mid]) - np.nanmin(rows[:, mid]) if finite[:, mid].all() else 0.0
        step_c = max(1, int(span_c / size_px))
        step_r = max(1, int(span_r / size_px))
        c0 = math.floor(cols[finite].min() - 0.5) - step_c
        c1 = math.ceil(cols[finite].max() + 0.5) + step_c
        r0 = max(math.floor(rows[finite].min() - 0.5) - step_r, -step_r)
        r1 = min(math.ceil(rows[finite].max() + 0.5) + step_r, self.grid.height + step_r)
        if r1 <= r0 or c1 <= c0:
            return out
        width = self.grid.width
        wraps = self.period_px is not None and (c0 < 0 or c1 > width)
        if wraps:
            step_c = 1  # pieces on both sides of the seam are read at full resolution and joined
            c0, c1 = max(c0, math.floor(col_c - width / 2.0)), min(c1, math.ceil(col_c + width / 2.0))
        out_h = max(1, math.ceil((r1 - r0) / step_r))
        out_w = max(1, math.ceil((c1 - c0) / step_c))
        decimated = step_c > 1 or step_r > 1
        resampling = (Resampling.mode if categorical else Resampling.average) if decimated else Resampling.nearest
        if not wraps:
            data = read_window(self.ds, Window(c0, r0, c1 - c0, r1 - r0), out_shape=(out_h, out_w),
                               resampling=resampling)
        else:
            pieces, start = [], c0
            while start < c1:
                local = start % width
                stop = min(c1, start + (width - local))
                pieces.append(read_window(self.ds, Window(local, r0, stop - start, r1 - r0),
                                          out_shape=(out_h, stop - start), resampling=resampling))
                start = stop
            data = np.ma.concatenate(pieces, axis=1)
        values = np.ma.filled(data, 0.0).astype(np.float32)
        weight = (~np.ma.getmaskarray(data)).astype(np.float32)
        # Fractional window coordinates of pixel centres: source col c -> (c - c0) / step - 0.5.
        wc = (cols - c0) * (out_w / (c1 - c0)) - 0.5
        wr = (rows - r0) * (out_h / (r1 - r0)) - 0.5
        coords = np.stack([np.where(finite, wr, -10.0), np.where(finite, wc, -10.0)])
        if categorical:
            code = ndimage.map_coordinates(values, coords, order=0, mode="constant", cval=0.0)
            ok = finite & (ndimage.map_coordinates(weight, coords, order=0, mode="constant", cval=0.0) > 0.5)
            out[ok] = code[ok]
            return out
        num = ndimage.map_coordinates(values * weight, coords, order=1, mode="constant", cval=0.0)
        if weight.all():
            # Nothing masked: every sample's neighbours lie in the window (it has a margin).
            out[finite] = num[finite] * self.unit_m
            return out
        den = ndimage.map_coordinates(weight, coords, order=1, mode="constant", cval=0.0)
        ok = finite & (den >= _MIN_VALID_WEIGHT)
        out[ok] = (num[ok] / den[ok]) * self.unit_m
        return out


def _describe_invalid(name: str, fraction: float) -> str:
    if fraction >= 1.0:
        return f"outside the {name}"
    return f"{fraction:.0%} of the {name} crop is nodata or outside the mosaic"


def _positions(craters: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """lon (-180..180), lat, diameter_km arrays of a craters table, and which rows are usable."""
    missing = [c for c in ("lon", "lat", "diameter_km") if c not in craters.columns]
    if missing:
        raise ValueError(f"craters table lacks column(s) {missing}; needs lon, lat (degrees) and diameter_km")
    lon = np.atleast_1d(normalize_lon(craters["lon"].to_numpy(dtype=float)))
    lat = craters["lat"].to_numpy(dtype=float)
    diameter_km = craters["diameter_km"].to_numpy(dtype=float)
    usable = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90.0) & np.isfinite(diameter_km) & (diameter_km > 0)
    return lon, lat, diameter_km, usable


def _crop_lonlat(settings: CropSettings):
    """A function (lon, lat, diameter_km) -> lon/lat (S, S) of a crater's crop pixel centres."""
    s = settings.size_px
    # Crop pixel centres in units of the side: x east, y north (row 0 is the northern edge).
    u = (np.arange(s) + 0.5) / s - 0.5
    ux, uy = np.meshgrid(u, -u)

    def lonlat(lon: float, lat: float, diameter_km: float):
        side_m = settings.side_diameters * diameter_km * 1000.0
        return local_lonlat(lon, lat, ux * side_m, uy * side_m)

    return lonlat


def _iterate(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm import tqdm

    return tqdm(range(n), desc=desc, unit="crater")


def extract_layer(path, craters: pd.DataFrame, *, settings: CropSettings = CropSettings(),
                  categorical: bool = False, assume_crs=None, unit_m: float | None = 1.0,
                  progress: bool = False) -> np.ndarray:
    """Crops (N, S, S) float32 of one raster on the same crater-centred grid as
    :func:`extract_crops`, NaN where it has no data. ``categorical`` samples class codes
    (e.g. a geologic unit map) by nearest neighbour; ``unit_m`` scales values (None: from
    the band's unit, km -> 1000)."""
    lon, lat, diameter_km, usable = _positions(craters)
    s = settings.size_px
    out = np.full((len(lon), s, s), np.nan, dtype=np.float32)
    lonlat = _crop_lonlat(settings)
    layer = _Layer(Path(path).name, path, assume_crs, unit_m)
    try:
        for i in _iterate(len(lon), progress, f"crops of {Path(path).name}"):
            if usable[i]:
                plon, plat = lonlat(lon[i], lat[i], diameter_km[i])
                out[i] = layer.sample(plon, plat, float(lon[i]), float(lat[i]), s, categorical=categorical)
    finally:
        layer.close()
    return out


def extract_crops(craters: pd.DataFrame, *, dom_path=None, dem_path=None,
                  settings: CropSettings = CropSettings(), assume_crs=None, progress: bool = False,
                  max_invalid_fraction: float = 0.05, dem_unit_m: float | None = None) -> CraterCrops:
    """Crops of every crater (columns ``lon``, ``lat`` in degrees, ``diameter_km``) from a DOM
    and/or a DEM GeoTIFF in a lunar CRS (``assume_crs`` states it for files without one).

    ``dem_unit_m``: metres per DEM unit; None reads the band's unit (``km`` -> 1000) and
    defaults to metres. A crater whose crop misses more than ``max_invalid_fraction`` of any
    layer is not valid (``reasons`` says which layer and how much); its crop keeps the values
    that were there, NaN elsewhere. See the module docstring for the geometry.
    """
    if dom_path is None and dem_path is None:
        raise ValueError("extract_crops needs dom_path, dem_path or both")
    lon, lat, diameter_km, usable = _positions(craters)
    s = settings.size_px
    n = len(lon)
    lonlat = _crop_lonlat(settings)
    layers: list[_Layer] = []
    try:
        if dom_path is not None:
            layers.append(_Layer("DOM", dom_path, assume_crs, 1.0))
        if dem_path is not None:
            layers.append(_Layer("DEM", dem_path, assume_crs, dem_unit_m))
        arrays = {layer.name: np.full((n, s, s), np.nan, dtype=np.float32) for layer in layers}
        fractions = {layer.name: np.ones(n) for layer in layers}
        reasons = [""] * n
        valid = usable.copy()
        for i in _iterate(n, progress, "crater crops"):
            if not usable[i]:
                reasons[i] = "bad position or diameter"
                continue
            plon, plat = lonlat(lon[i], lat[i], diameter_km[i])
            why, pixels = [], {}
            for layer in layers:
                key = layer.grid_key
                if key not in pixels:
                    pixels[key] = layer.pixels(plon, plat, float(lon[i]), float(lat[i]))
                crop = layer.sample(plon, plat, float(lon[i]), float(lat[i]), s, pixels=pixels[key])
                arrays[layer.name][i] = crop
                frac = float(np.isnan(crop).mean())
                fractions[layer.name][i] = frac
                if frac > max_invalid_fraction:
                    why.append(_describe_invalid(layer.name, frac))
            if why:
                valid[i] = False
                reasons[i] = "; ".join(why)
    finally:
        for layer in layers:
            layer.close()
    pixel_size_m = settings.side_diameters * diameter_km * 1000.0 / s
    return CraterCrops(dom=arrays.get("DOM"), dem_m=arrays.get("DEM"), pixel_size_m=pixel_size_m,
                       valid=valid, reasons=reasons, settings=settings, invalid_fraction=fractions)


@dataclass
class NativeWindow:
    """A crater's window of a raster on the raster's own pixel grid (no resampling): point values
    exactly as stored, so a model rendered at the same pixel centres fits them without the blur
    that bilinear resampling onto a crop adds (about 0.4 source pixels, comparable to the
    diffusion length of young craters at 100 m/px)."""

    values: np.ndarray     # float32 (h, w), metres for a DEM; NaN where nodata / outside
    x_m: np.ndarray        # float64 (h, w): east offset of each pixel centre from the crater centre,
    y_m: np.ndarray        #   north offset (the crops' local azimuthal-equidistant projection)
    step_px: int           # source pixels per window pixel (point-subsampled for big craters)


def native_windows(path, craters: pd.DataFrame, *, reach_radii: float = 2.5, max_radius_px: float = 24.0,
                   assume_crs=None, unit_m: float | None = None, progress: bool = False
                   ) -> list[NativeWindow | None]:
    """Per crater, the source pixels within ``reach_radii`` crater radii of its centre (a box,
    clipped to the raster), with their local offsets; None where the crater is unusable, its box
    misses the raster or crosses a wrapping mosaic's seam. Craters wider than ``max_radius_px`` source pixels in radius
    are point-subsampled (every ``step_px``-th pixel, values untouched) to about that radius.
    ``unit_m``: metres per value (None: from the band's unit, km -> 1000)."""
    lon, lat, diameter_km, usable = _positions(craters)
    azimuths = np.linspace(0.0, 2.0 * np.pi, 72, endpoint=False)
    out: list[NativeWindow | None] = [None] * len(lon)
    layer = _Layer(Path(path).name, path, assume_crs, unit_m)
    try:
        grid = layer.grid
        for i in _iterate(len(lon), progress, f"native windows of {Path(path).name}"):
            if not usable[i]:
                continue
            reach_m = reach_radii * diameter_km[i] * 500.0
            blon, blat = local_lonlat(lon[i], lat[i], reach_m * np.sin(azimuths), reach_m * np.cos(azimuths))
            cols, rows = grid.lonlat_to_pixel(blon, blat)
            if not (np.all(np.isfinite(cols)) and np.all(np.isfinite(rows))):
                continue
            c0, c1 = math.floor(cols.min()), math.ceil(cols.max())
            r0, r1 = math.floor(rows.min()), math.ceil(rows.max())
            radius_px = max(c1 - c0, r1 - r0) / (2.0 * reach_radii)
            if layer.period_px is not None and (c0 < 0 or c1 > grid.width):
                continue  # across the seam of a wrapping mosaic
            # Clipped to the raster: the fit decides whether enough of the crater is left.
            c0, c1, r0, r1 = max(c0, 0), min(c1, grid.width), max(r0, 0), min(r1, grid.height)
            if c1 - c0 < 3 or r1 - r0 < 3:
                continue
            step = max(1, math.ceil(radius_px / max_radius_px))
            data = read_window(layer.ds, Window(c0, r0, c1 - c0, r1 - r0), resampling=Resampling.nearest)
            values = (np.ma.filled(data, np.nan)[::step, ::step] * layer.unit_m).astype(np.float32)
            cc = c0 + np.arange(0, c1 - c0, step) + 0.5
            rr = r0 + np.arange(0, r1 - r0, step) + 0.5
            plon, plat = grid.pixel_to_lonlat(*np.meshgrid(cc, rr))
            x_m, y_m = local_offsets_m(float(lon[i]), float(lat[i]), plon, plat)
            out[i] = NativeWindow(values, np.asarray(x_m, float), np.asarray(y_m, float), step)
    finally:
        layer.close()
    return out
