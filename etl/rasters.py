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

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from etl.geometry import PixelGrid, check_lunar_crs

__all__ = ["CHANNELS", "RasterError", "footprint_coverage", "model_channels", "open_raster", "read_aligned",
           "read_window"]

#: Channels of the model input, in order (cfg.MODEL.PIXEL_MEAN/STD have one entry each).
CHANNELS: tuple[str, ...] = ("dom", "dem", "slope")

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


def model_channels(dom, dem, pixel_size_m: float, *, dom_range: tuple[float, float] | None = None,
                   dem_unit_m: float = 1.0) -> np.ndarray:
    """The model input: float32 (3, H, W), channels :data:`CHANNELS`, each about in [0, 1].

    - ``dom``: stretched between the tile's 1st and 99th percentiles (clipped), because
      mosaics come from different sensors, bit depths and exposures and the detector
      should see the same contrast everywhere; relative brightness (fresh craters
      brighter than their surroundings) survives. Pass ``dom_range`` (e.g. (0, 255),
      the dtype's range) to keep absolute albedo instead.
    - ``dem``: elevation minus the tile's minimum over its range (min-max per tile):
      only relative relief matters for a crater's shape.
    - ``slope``: degrees of the DEM gradient (np.gradient with ``pixel_size_m``; DEM
      values times ``dem_unit_m`` are metres) divided by 90.

    Masked pixels (nodata, outside the mosaic) are filled with the tile's median before
    the gradient and end as that median's value in DOM and DEM and zero slope.
    A fully masked tile gives zeros.
    """
    dom = np.ma.masked_invalid(np.ma.asarray(dom, dtype=np.float32))
    dem = np.ma.masked_invalid(np.ma.asarray(dem, dtype=np.float32)) * np.float32(dem_unit_m)
    if dom.shape != dem.shape:
        raise ValueError(f"DOM {dom.shape} and DEM {dem.shape} must be on one grid (see read_aligned)")
    out = np.zeros((len(CHANNELS),) + dom.shape, dtype=np.float32)

    dom_valid = dom.compressed()
    if dom_valid.size:
        if dom_range is None:
            low, high = np.percentile(dom_valid, [_DOM_LOW_PCT, _DOM_HIGH_PCT])
        else:
            low, high = dom_range
        filled = _filled(dom, float(np.median(dom_valid)))
        out[0] = np.clip((filled - low) / max(float(high - low), 1e-12), 0.0, 1.0) if high > low else 0.5

    dem_valid = dem.compressed()
    if dem_valid.size:
        filled = _filled(dem, float(np.median(dem_valid)))
        low, high = float(dem_valid.min()), float(dem_valid.max())
        out[1] = (filled - low) / (high - low) if high > low else 0.0
        if min(filled.shape) >= 2:
            d_row, d_col = np.gradient(filled, float(pixel_size_m))
            out[2] = np.degrees(np.arctan(np.hypot(d_row, d_col))) / 90.0
            out[2][np.ma.getmaskarray(dem)] = 0.0
    return out
