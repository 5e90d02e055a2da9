"""DOM / DEM GeoTIFFs: open with a checked lunar CRS, read windows lazily, resample
onto one grid, and build the multi-channel model input.

A global mosaic does not fit in memory, so nothing here reads a whole raster:
windows go through rasterio's windowed (boundless) reads, and a DEM on another
grid goes through a :class:`rasterio.vrt.WarpedVRT` that warps only the window asked for.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from etl.geometry import PixelGrid, check_lunar_crs
from etl.moon import MOON_RADIUS_M

__all__ = ["CHANNELS", "DEM_CHANNELS", "KNOWN_CHANNELS", "RasterError", "footprint_coverage", "ground_pixel_size_m",
           "hillshade", "model_channels", "open_raster", "read_aligned", "read_onto_grid", "read_window",
           "surface_gradient"]

#: Channels of the model input, in order (cfg.MODEL.PIXEL_MEAN/STD have one entry each): the default set.
CHANNELS: tuple[str, ...] = ("dom", "dem", "slope")
#: Every channel :func:`model_channels` can make; a config picks an ordered subset.
KNOWN_CHANNELS: tuple[str, ...] = ("dom", "dem", "slope", "hillshade")
#: The channels computed from the DEM (a model with only these needs no DOM).
DEM_CHANNELS: tuple[str, ...] = ("dem", "slope", "hillshade")
#: Default sun of the hillshade channel: from the north-west, 30 degrees up (a cartographic
#: convention; shadows towards the viewer's lower right read as depressions).
DEFAULT_SUN_AZIMUTH_DEG, DEFAULT_SUN_ELEVATION_DEG = 315.0, 30.0

# Percentiles of the per-tile DOM stretch: robust to a few saturated or dead pixels.
_DOM_LOW_PCT, _DOM_HIGH_PCT = 1.0, 99.0


class RasterError(RuntimeError):
    """A raster that cannot be opened or read (missing, corrupt, truncated)."""


def _name(ds) -> str:
    return str(getattr(ds, "name", ds))


def open_raster(path, *, assume_crs=None):
    """Open a GeoTIFF (any GDAL raster) whose CRS is lunar; returns an open rasterio dataset.

    A missing or non-lunar CRS raises :class:`etl.geometry.LunarCRSError` unless
    ``assume_crs`` states the lunar CRS; the dataset is then reopened through GDAL's
    ``vrt://`` connection with that CRS assigned, so ``ds.crs`` and everything built on
    it (WarpedVRT, PixelGrid) see it. A missing, corrupt or truncated file raises
    :class:`RasterError` naming the path.
    """
    path = Path(path)
    if not path.is_file():
        raise RasterError(f"{path}: no such raster file")
    try:
        ds = rasterio.open(path)
    except RasterioError as exc:
        raise RasterError(f"{path}: cannot open as a raster ({exc})") from exc
    try:
        crs = check_lunar_crs(ds.crs, source=str(path), assume_crs=assume_crs)
    except Exception:
        ds.close()
        raise
    if ds.crs == crs:
        return ds
    ds.close()
    srs = ":".join(crs.to_authority()) if crs.to_authority() else crs.to_wkt()
    try:
        return rasterio.open(f"vrt://{os.path.abspath(path)}?a_srs={srs}")
    except RasterioError as exc:
        raise RasterError(f"{path}: cannot assign CRS {srs!r} ({exc})") from exc


def _as_window(window) -> Window:
    if isinstance(window, Window):
        return window
    col_off, row_off, width, height = window
    return Window(col_off, row_off, width, height)


def read_window(ds, window, *, out_shape=None, band: int = 1,
                resampling: Resampling = Resampling.bilinear) -> np.ma.MaskedArray:
    """Read one band's window as a float32 masked array, lazily (only the blocks it touches).

    ``window`` is a rasterio Window or (col_off, row_off, width, height) in the dataset's
    pixels; it may reach outside the raster, whose outside is masked (boundless read),
    as are nodata and NaN pixels. ``out_shape`` (rows, cols) resamples, e.g. to read a
    pyramid level (GDAL uses the file's overviews when it has them).
    """
    window = _as_window(window)
    out_shape = (int(round(window.height)), int(round(window.width))) if out_shape is None else tuple(out_shape)
    inside = (window.col_off >= 0 and window.row_off >= 0 and window.col_off + window.width <= ds.width
              and window.row_off + window.height <= ds.height)
    try:
        # Boundless reads go through a VRT; only use them when the window sticks out.
        data = ds.read(band, window=window, out_shape=out_shape, masked=True, boundless=not inside,
                       resampling=resampling)
    except RasterioError as exc:
        raise RasterError(f"{_name(ds)}: cannot read window {window} of band {band} ({exc}); "
                          "the file may be truncated or corrupt") from exc
    data = np.ma.masked_invalid(data.astype(np.float32), copy=False)
    data.mask = np.ma.getmaskarray(data)  # always a full boolean mask, never np.ma.nomask
    return data


def _window_on_grid(ds, grid: PixelGrid) -> Window | None:
    """The dataset window covering ``grid`` when the grid is the dataset's own grid, a
    window of it or a pyramid level of it (same CRS, axis-aligned); None otherwise."""
    src, dst = ds.transform, grid.transform
    if ds.crs != grid.crs or src.b or src.d or dst.b or dst.d:
        return None
    col_off, row_off = (dst.c - src.c) / src.a, (dst.f - src.f) / src.e
    width, height = grid.width * dst.a / src.a, grid.height * dst.e / src.e
    if width <= 0 or height <= 0:
        return None
    # Snap sub-micro-pixel float noise so aligned windows read blocks exactly.
    snap = lambda v: round(v) if math.isclose(v, round(v), abs_tol=1e-6) else v  # noqa: E731
    return Window(snap(col_off), snap(row_off), snap(width), snap(height))


def _read_onto_grid(ds, grid: PixelGrid, resampling: Resampling) -> np.ma.MaskedArray:
    window = _window_on_grid(ds, grid)
    if window is not None:
        return read_window(ds, window, out_shape=grid.shape, resampling=resampling)
    try:
        # Another CRS or resolution: warp just this grid (the VRT reads only the source
        # blocks it needs), NaN marking where the source has no data.
        with WarpedVRT(ds, crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                       resampling=resampling, dtype="float32", nodata=np.nan) as vrt:
            data = vrt.read(1, masked=True)
    except RasterioError as exc:
        raise RasterError(f"{_name(ds)}: cannot resample onto the target grid ({exc})") from exc
    data = np.ma.masked_invalid(data.astype(np.float32), copy=False)
    data.mask = np.ma.getmaskarray(data)
    return data


def footprint_coverage(base_ds, other_ds) -> float | None:
    """Fraction of ``base_ds``'s footprint that ``other_ds``'s footprint covers (0..1): their
    bounding boxes in the base's CRS (the other's edges densified when it is reprojected);
    None when the other's bounds do not project to finite ones (e.g. a global raster into a
    polar projection).

    Cheap (no pixels are read) and an upper bound where a footprint is not axis-aligned in
    the base's CRS; what a tile really holds is decided by its pixels' masks."""
    from rasterio.errors import CRSError
    from rasterio.warp import transform_bounds

    left, bottom, right, top = other_ds.bounds
    if other_ds.crs != base_ds.crs:
        try:
            left, bottom, right, top = transform_bounds(other_ds.crs, base_ds.crs, left, bottom, right, top,
                                                        densify_pts=21)
        except (CRSError, RasterioError) as exc:
            raise RasterError(f"{_name(other_ds)}: cannot project its bounds into the CRS of "
                              f"{_name(base_ds)} ({exc})") from exc
    if not np.isfinite([left, bottom, right, top]).all():
        return None
    (left, right), (bottom, top) = sorted((left, right)), sorted((bottom, top))
    (b_left, b_right), (b_bottom, b_top) = sorted(base_ds.bounds[::2]), sorted(base_ds.bounds[1::2])
    width = min(right, b_right) - max(left, b_left)
    height = min(top, b_top) - max(bottom, b_bottom)
    area = (b_right - b_left) * (b_top - b_bottom)
    if width <= 0 or height <= 0 or area <= 0:
        return 0.0
    return float(min(width * height / area, 1.0))


def read_onto_grid(ds, grid: PixelGrid, *, resampling: Resampling = Resampling.bilinear) -> np.ma.MaskedArray:
    """One raster resampled onto any lunar ``grid`` (its own, a window or level of it, or another
    CRS, e.g. a local projection centred on a tile): a masked float32 array of shape
    ``grid.shape``, read lazily (a WarpedVRT when the grid is not the raster's own). A global
    mosaic in lon/lat warps across +-180 (the warper maps each target pixel back to a
    longitude in -180..180), so a tile on the antimeridian reads both edges of the mosaic."""
    check_lunar_crs(ds.crs, source=_name(ds))
    return _read_onto_grid(ds, grid, resampling)


def read_aligned(dom_ds, dem_ds, grid: PixelGrid, *, resampling: Resampling = Resampling.bilinear
                 ) -> tuple[np.ma.MaskedArray, np.ma.MaskedArray]:
    """DOM and DEM resampled onto one ``grid`` (the DOM's, a window or a pyramid level of
    it): masked float32 arrays of shape ``grid.shape``. A DEM in another resolution or
    CRS is warped on the fly through a WarpedVRT, so nothing global is loaded."""
    for ds in (dom_ds, dem_ds):
        check_lunar_crs(ds.crs, source=_name(ds))
    return _read_onto_grid(dom_ds, grid, resampling), _read_onto_grid(dem_ds, grid, resampling)


def _filled(values: np.ma.MaskedArray, fill: float) -> np.ndarray:
    return np.ma.filled(values.astype(np.float32), fill)


def ground_pixel_size_m(grid: PixelGrid) -> tuple[np.ndarray, float]:
    """Pixel sides on the ground, metres: (east-west side of each row, shape (H,); north-south side).

    In a geographic CRS a degree of longitude is ``cos(lat)`` times shorter than a degree of
    latitude, so the east-west side shrinks row by row (at 60 degrees it is half the
    equatorial one); a projected grid's sides are its linear unit divided by the projection's
    scale factors (PROJ's parallel scale per row and meridional scale, along the grid's centre
    column: exact for cylindrical projections, close elsewhere on a tile)."""
    t = grid.transform
    side_x, side_y = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
    if grid.crs.is_geographic:
        metres_per_degree = math.pi / 180.0 * MOON_RADIUS_M
        _, lat = grid.pixel_to_lonlat(np.full(grid.height, grid.width / 2.0), np.arange(grid.height) + 0.5)
        cos_lat = np.clip(np.cos(np.radians(lat)), 1e-6, None)  # a pole row keeps a finite side
        return side_x * metres_per_degree * cos_lat, side_y * metres_per_degree
    factor = float(grid.crs.linear_units_factor[1])
    # A projection's scale varies over the map (simple cylindrical stretches east-west by
    # 1/cos(lat), Mercator both ways): divide by PROJ's scale factors along the centre column.
    import pyproj

    lon, lat = grid.pixel_to_lonlat(np.full(grid.height, grid.width / 2.0), np.arange(grid.height) + 0.5)
    factors = pyproj.Proj(pyproj.CRS.from_wkt(grid.crs.to_wkt())).get_factors(lon, lat)
    parallel = np.where(np.isfinite(factors.parallel_scale), factors.parallel_scale, 1.0)
    meridional = float(np.nanmedian(factors.meridional_scale)) if np.isfinite(factors.meridional_scale).any() else 1.0
    return side_x * factor / np.clip(parallel, 1e-6, None), side_y * factor / max(meridional, 1e-6)


def surface_gradient(dem_m: np.ndarray, pixel_size_m) -> tuple[np.ndarray, np.ndarray]:
    """(dz/d east, dz/d north) of a north-up DEM in metres, dimensionless (m per m).

    ``pixel_size_m`` is one side for both axes, (x, y) sides, or (x side per row, y side) as
    :func:`ground_pixel_size_m` returns for a geographic grid."""
    if isinstance(pixel_size_m, (tuple, list)):
        size_x, size_y = pixel_size_m
    else:
        size_x = size_y = pixel_size_m
    d_row, d_col = np.gradient(dem_m.astype(np.float64))
    size_x = np.asarray(size_x, dtype=np.float64)
    if size_x.ndim == 1:
        size_x = size_x[:, None]
    # Rows run south in a north-up grid: d/d north = -d/d row.
    return d_col / size_x, -d_row / float(size_y)


def hillshade(dz_east: np.ndarray, dz_north: np.ndarray, *, azimuth_deg: float = DEFAULT_SUN_AZIMUTH_DEG,
              elevation_deg: float = DEFAULT_SUN_ELEVATION_DEG) -> np.ndarray:
    """Lambertian shading of a surface by a sun at ``azimuth_deg`` (clockwise from north) and
    ``elevation_deg`` above the horizon, from its gradient (:func:`surface_gradient`): the
    cosine of the angle between the surface normal and the sun, 0 (in shadow) .. 1."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
    norm = np.sqrt(dz_east ** 2 + dz_north ** 2 + 1.0)
    return np.clip((-dz_east * sun[0] - dz_north * sun[1] + sun[2]) / norm, 0.0, 1.0).astype(np.float32)


def model_channels(dom, dem, pixel_size_m, *, channels: Sequence[str] = CHANNELS,
                   dom_range: tuple[float, float] | None = None, dem_unit_m: float = 1.0,
                   sun_azimuth_deg: float = DEFAULT_SUN_AZIMUTH_DEG,
                   sun_elevation_deg: float = DEFAULT_SUN_ELEVATION_DEG) -> np.ndarray:
    """The model input: float32 (len(channels), H, W), each channel about in [0, 1].

    ``channels`` is any ordered subset of :data:`KNOWN_CHANNELS` (the config's choice: DOM only
    for NAC, DEM-derived only for LOLA, or both); ``dom`` may be None when "dom" is not
    asked for, ``dem`` when no DEM channel is.

    - ``dom``: stretched between the tile's 1st and 99th percentiles (clipped), because
      mosaics come from different sensors, bit depths and exposures and the detector
      should see the same contrast everywhere; relative brightness (fresh craters
      brighter than their surroundings) survives. Pass ``dom_range`` (e.g. (0, 255),
      the dtype's range) to keep absolute albedo instead.
    - ``dem``: elevation minus the tile's minimum over its range (min-max per tile):
      only relative relief matters for a crater's shape.
    - ``slope``: degrees of the DEM gradient divided by 90, and ``hillshade``: the DEM lit by
      a sun at ``sun_azimuth_deg`` / ``sun_elevation_deg`` (:func:`hillshade`), so that a
      DEM-only model sees rims as a geologist does. Both in metres on the ground:
      ``pixel_size_m`` is a :class:`etl.geometry.PixelGrid` (sides from
      :func:`ground_pixel_size_m`: in a geographic grid the east-west side shrinks with
      cos(lat)), one side in metres, or (x, y) sides; DEM values times ``dem_unit_m`` are metres.

    Masked pixels (nodata, outside the mosaic) are filled with the tile's median before
    the gradient and end as that median's value in DOM and DEM, zero slope and the
    hillshade of flat ground. A fully masked tile gives zeros.
    """
    channels = tuple(channels)
    unknown = [c for c in channels if c not in KNOWN_CHANNELS]
    if unknown or not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels {list(channels)}: give distinct names from {list(KNOWN_CHANNELS)}")
    if isinstance(pixel_size_m, PixelGrid):
        pixel_size_m = ground_pixel_size_m(pixel_size_m)
    needs_dem = any(c in DEM_CHANNELS for c in channels)
    dom = None if dom is None or "dom" not in channels else np.ma.masked_invalid(np.ma.asarray(dom, dtype=np.float32))
    dem = (None if dem is None or not needs_dem
           else np.ma.masked_invalid(np.ma.asarray(dem, dtype=np.float32)) * np.float32(dem_unit_m))
    if "dom" in channels and dom is None:
        raise ValueError("channel 'dom' asked for without a DOM")
    if needs_dem and dem is None:
        raise ValueError(f"channels {list(channels)} need a DEM")
    if dom is not None and dem is not None and dom.shape != dem.shape:
        raise ValueError(f"DOM {dom.shape} and DEM {dem.shape} must be on one grid (see read_aligned)")
    shape = (dom if dom is not None else dem).shape
    out = np.zeros((len(channels),) + shape, dtype=np.float32)
    index = {c: i for i, c in enumerate(channels)}

    if dom is not None:
        dom_valid = dom.compressed()
        if dom_valid.size:
            if dom_range is None:
                low, high = np.percentile(dom_valid, [_DOM_LOW_PCT, _DOM_HIGH_PCT])
            else:
                low, high = dom_range
            filled = _filled(dom, float(np.median(dom_valid)))
            out[index["dom"]] = np.clip((filled - low) / max(float(high - low), 1e-12), 0.0, 1.0) if high > low else 0.5

    if dem is not None:
        dem_valid = dem.compressed()
        if dem_valid.size:
            filled = _filled(dem, float(np.median(dem_valid)))
            low, high = float(dem_valid.min()), float(dem_valid.max())
            if "dem" in index:
                out[index["dem"]] = (filled - low) / (high - low) if high > low else 0.0
            if min(filled.shape) >= 2 and ("slope" in index or "hillshade" in index):
                dz_east, dz_north = surface_gradient(filled, pixel_size_m)
                masked = np.ma.getmaskarray(dem)
                if "slope" in index:
                    out[index["slope"]] = np.degrees(np.arctan(np.hypot(dz_east, dz_north))) / 90.0
                    out[index["slope"]][masked] = 0.0
                if "hillshade" in index:
                    shade = hillshade(dz_east, dz_north, azimuth_deg=sun_azimuth_deg, elevation_deg=sun_elevation_deg)
                    shade[masked] = math.sin(math.radians(sun_elevation_deg))
                    out[index["hillshade"]] = shade
    return out
