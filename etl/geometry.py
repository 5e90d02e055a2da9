"""Lunar CRSs, lon/lat <-> pixel grids, and crater rim circles -> pixel boxes.

A crater's box comes from projecting its rim circle (drawn on the Moon sphere)
through the mosaic's CRS and geotransform, never from ``diameter / resolution``:
that is what makes boxes right in any projection (a crater at 60 degrees latitude
in a simple-cylindrical map is twice as wide as it is tall).

Pixel convention is rasterio's: (col, row) = (0, 0) is the outer top-left corner
of the top-left pixel, pixel centres sit at +0.5.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pyproj
from affine import Affine
from pyproj.crs import ProjectedCRS
from pyproj.crs.coordinate_operation import EquidistantCylindricalConversion, MercatorBConversion
from rasterio.crs import CRS

from etl.moon import MOON_CRS, MOON_RADIUS_M, great_circle_distance_m, normalize_lon

__all__ = [
    "LunarCRSError",
    "PixelGrid",
    "boxes_px_to_craters",
    "check_lunar_crs",
    "crater_boxes_px",
    "mercator_crs",
    "polar_stereographic_crs",
    "rim_lonlat",
    "simple_cylindrical_crs",
    "to_rasterio_crs",
]

# A body whose reference ellipsoid's semi-major axis is this close to the Moon's
# sphere is the Moon (the triaxial IAU Moon ellipsoids stay within ~1 km of it).
_MOON_AXIS_TOLERANCE_M = 5_000.0


class LunarCRSError(ValueError):
    """A raster or catalogue is not in a lunar CRS (missing, or an Earth CRS)."""


def to_rasterio_crs(crs) -> CRS:
    """Any CRS description (rasterio / pyproj CRS, 'IAU_2015:30100', WKT, PROJ string) as a rasterio CRS."""
    if isinstance(crs, CRS):
        return crs
    if isinstance(crs, pyproj.CRS):
        return CRS.from_wkt(crs.to_wkt())
    return CRS.from_user_input(crs)


def _semi_major_m(crs: CRS) -> float | None:
    ellipsoid = pyproj.CRS.from_wkt(crs.to_wkt()).ellipsoid
    return None if ellipsoid is None else float(ellipsoid.semi_major_metre)


def _is_lunar(crs: CRS) -> bool:
    axis = _semi_major_m(crs)
    return axis is not None and abs(axis - MOON_RADIUS_M) <= _MOON_AXIS_TOLERANCE_M


def check_lunar_crs(crs, *, source: str = "", assume_crs=None) -> CRS:
    """Return ``crs`` (as a rasterio CRS) if it is lunar; otherwise the caller's ``assume_crs``.

    Lunar means the CRS's ellipsoid or sphere is the Moon's (semi-major axis about
    1,737,400 m): IAU_2015:301xx, ESRI:104903, or any WKT/PROJ with a Moon datum.
    ``assume_crs`` replaces a missing or non-lunar CRS (e.g. EPSG:4326, a common
    mistake with planetary data); a lunar CRS found in the file is kept.
    Raises :class:`LunarCRSError` naming ``source`` otherwise.
    """
    where = source or "dataset"
    if crs is not None:
        try:
            found = to_rasterio_crs(crs)
        except Exception as exc:  # rasterio raises CRSError subclasses of its own
            if assume_crs is None:
                raise LunarCRSError(f"{where}: cannot parse its CRS {crs!r}: {exc}") from exc
            found = None
        if found is not None and _is_lunar(found):
            return found
    if assume_crs is not None:
        assumed = to_rasterio_crs(assume_crs)
        if not _is_lunar(assumed):
            raise LunarCRSError(f"{where}: assume_crs {assume_crs!r} is not a lunar CRS "
                                f"(expected a Moon sphere of radius {MOON_RADIUS_M:.0f} m, e.g. {MOON_CRS})")
        return assumed
    if crs is None:
        raise LunarCRSError(f"{where} has no CRS; pass assume_crs (e.g. {MOON_CRS}) to state the lunar CRS it is in")
    axis = _semi_major_m(found)
    body = "an Earth CRS" if axis is not None and abs(axis - 6_378_137.0) < 30_000 else "not a lunar CRS"
    raise LunarCRSError(
        f"{where} has CRS {found.to_string()!r}, which is {body} (ellipsoid semi-major axis "
        f"{axis if axis is None else round(axis)} m, the Moon's is {MOON_RADIUS_M:.0f} m); "
        f"if the data is lunar, pass assume_crs (e.g. {MOON_CRS})"
    )


# --------------------------------------------------------------------------- CRSs

_MOON_GEOGRAPHIC = pyproj.CRS(MOON_CRS)


def simple_cylindrical_crs(center_lon_deg: float = 0.0) -> CRS:
    """Equirectangular (simple cylindrical) in metres on the Moon sphere, true scale at the equator."""
    lon0 = normalize_lon(center_lon_deg)
    if lon0 == 0.0:
        return CRS.from_user_input("IAU_2015:30110")
    if lon0 == -180.0:
        return CRS.from_user_input("IAU_2015:30115")
    crs = ProjectedCRS(conversion=EquidistantCylindricalConversion(longitude_natural_origin=lon0),
                       geodetic_crs=_MOON_GEOGRAPHIC, name=f"Moon 2000 simple cylindrical, clon = {lon0:g}")
    return to_rasterio_crs(crs)


def mercator_crs(standard_parallel_deg: float = 33.0) -> CRS:
    """Mercator on the Moon_2000 sphere; the default (standard parallel 33) is the
    original DeepCraters projection. IAU_2015:30190 is Mercator true at the equator only,
    so other parallels are built from the IAU geographic CRS (keeping its Moon datum)."""
    if standard_parallel_deg == 0.0:
        return CRS.from_user_input("IAU_2015:30190")
    crs = ProjectedCRS(conversion=MercatorBConversion(latitude_first_parallel=standard_parallel_deg),
                       geodetic_crs=_MOON_GEOGRAPHIC,
                       name=f"Moon 2000 Mercator, standard parallel {standard_parallel_deg:g}")
    return to_rasterio_crs(crs)


def polar_stereographic_crs(north: bool = True) -> CRS:
    """Polar stereographic on the Moon sphere (true scale at the pole), IAU_2015:30130 / 30135."""
    return CRS.from_user_input("IAU_2015:30130" if north else "IAU_2015:30135")


# ------------------------------------------------------------------ projections

@functools.lru_cache(maxsize=64)
def _projection(wkt: str):
    """(forward, inverse, x period or None, pole at infinity) for a projected CRS as WKT.

    The period is the length of 360 degrees of longitude along x in cylindrical
    projections (where x is linear in longitude), used to unwrap the antimeridian.
    PROJ clamps Mercator's poles to a large finite y, hence the explicit flag.
    """
    crs = pyproj.CRS.from_wkt(wkt)
    forward = pyproj.Transformer.from_crs(crs.geodetic_crs, crs, always_xy=True)
    inverse = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    method = (crs.coordinate_operation.method_name if crs.coordinate_operation else "").lower()
    cylindrical = ("equidistant cylindrical" in method or "plate carr" in method or "cylindrical equal area" in method
                   or ("mercator" in method and "transverse" not in method and "oblique" not in method))
    period = None
    pole_at_infinity = "mercator" in method and cylindrical
    if cylindrical:
        lon0 = 0.0
        for p in crs.coordinate_operation.params:
            if "longitude" in p.name.lower():
                lon0 = float(p.value)
        xs, _ = forward.transform([lon0, lon0 + 90.0], [0.0, 0.0])
        period = 4.0 * abs(xs[1] - xs[0])
    return forward, inverse, period, pole_at_infinity


@dataclass(frozen=True)
class PixelGrid:
    """A raster's pixel grid: CRS (lunar), affine geotransform and size in pixels."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def __post_init__(self):
        object.__setattr__(self, "crs", to_rasterio_crs(self.crs))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @classmethod
    def from_dataset(cls, ds, assume_crs=None) -> "PixelGrid":
        """The grid of an open rasterio dataset, its CRS checked to be lunar."""
        crs = check_lunar_crs(ds.crs, source=str(ds.name), assume_crs=assume_crs)
        return cls(crs, ds.transform, ds.width, ds.height)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    @property
    def pixel_size_m(self) -> float:
        """Mean pixel side, metres. In a projected CRS: mean of the pixel's x and y sides
        in its linear unit converted to metres (true size only where the projection's
        scale is 1). In a geographic CRS: degrees converted with the Moon radius at the
        equator (so pixels shrink in x away from it)."""
        t = self.transform
        mean_side = 0.5 * (math.hypot(t.a, t.d) + math.hypot(t.b, t.e))
        if self.crs.is_geographic:
            return mean_side * math.pi / 180.0 * MOON_RADIUS_M
        return mean_side * float(self.crs.linear_units_factor[1])

    def window(self, col_off: int, row_off: int, width: int, height: int) -> "PixelGrid":
        """The sub-grid of a window (offsets and size in this grid's pixels)."""
        return PixelGrid(self.crs, self.transform @ Affine.translation(col_off, row_off), width, height)

    def downsampled(self, factor: int) -> "PixelGrid":
        """Pyramid level: pixels ``factor`` times larger; size rounded up so the level covers the grid."""
        if factor < 1:
            raise ValueError(f"downsampling factor must be >= 1, got {factor}")
        return PixelGrid(self.crs, self.transform @ Affine.scale(factor),
                         math.ceil(self.width / factor), math.ceil(self.height / factor))

    # -- world coordinates (the CRS's x, y) -------------------------------------
    def _x_period(self) -> float | None:
        """Length of 360 degrees of longitude in x for cylindrical grids (geographic
        included), None for other projections."""
        if self.crs.is_geographic:
            return 360.0
        return _projection(self.crs.to_wkt())[2]

    def lonlat_to_xy(self, lon_deg, lat_deg) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat (degrees, on the Moon sphere) -> the CRS's x, y (pyproj)."""
        lon = np.asarray(lon_deg, dtype=float)
        lat = np.asarray(lat_deg, dtype=float)
        if self.crs.is_geographic:
            # A geographic mosaic may run 0..360: wrap longitudes to the side of its centre.
            x_centre = float(self.pixel_to_xy(self.width / 2.0, self.height / 2.0)[0])
            return (lon - x_centre + 180.0) % 360.0 + x_centre - 180.0, lat.copy()
        x, y = _projection(self.crs.to_wkt())[0].transform(lon, lat)
        return np.asarray(x, dtype=float), np.asarray(y, dtype=float)

    def xy_to_lonlat(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if self.crs.is_geographic:
            return np.asarray(normalize_lon(x)), y.copy()
        lon, lat = _projection(self.crs.to_wkt())[1].transform(x, y)
        return np.asarray(normalize_lon(lon)), np.asarray(lat, dtype=float)

    def xy_to_pixel(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        inv = ~self.transform
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f

    def pixel_to_xy(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        t = self.transform
        col = np.asarray(col, dtype=float)
        row = np.asarray(row, dtype=float)
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    # -- lon/lat <-> pixel ---------------------------------------------------------
    def lonlat_to_pixel(self, lon_deg, lat_deg) -> tuple[np.ndarray, np.ndarray]:
        """Lon/lat (degrees) -> fractional (col, row); points the projection cannot reach give inf."""
        return self.xy_to_pixel(*self.lonlat_to_xy(lon_deg, lat_deg))

    def pixel_to_lonlat(self, col, row) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (col, row) -> lon (-180..180), lat in degrees."""
        return self.xy_to_lonlat(*self.pixel_to_xy(col, row))


# --------------------------------------------------------------------- craters

def rim_lonlat(lon_deg, lat_deg, diameter_km, n_points: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """Points on each crater's rim circle on the Moon sphere: arrays (N, n_points) of lon
    (-180..180) and lat, degrees. Destination points at angular distance radius / R
    along ``n_points`` equally spaced azimuths (clockwise from north)."""
    lon = np.radians(np.atleast_1d(np.asarray(lon_deg, dtype=float)))[:, None]
    lat = np.radians(np.atleast_1d(np.asarray(lat_deg, dtype=float)))[:, None]
    delta = (np.atleast_1d(np.asarray(diameter_km, dtype=float)) * 500.0 / MOON_RADIUS_M)[:, None]
    azimuth = np.linspace(0.0, 2.0 * np.pi, n_points, endpoint=False)[None, :]
    sin_lat2 = np.sin(lat) * np.cos(delta) + np.cos(lat) * np.sin(delta) * np.cos(azimuth)
    lat2 = np.arcsin(np.clip(sin_lat2, -1.0, 1.0))
    lon2 = lon + np.arctan2(np.sin(azimuth) * np.sin(delta) * np.cos(lat),
                            np.cos(delta) - np.sin(lat) * sin_lat2)
    return normalize_lon(np.degrees(lon2)).reshape(lat2.shape), np.degrees(lat2)


def _project_craters(grid: PixelGrid, lon_deg, lat_deg, diameter_km, n_points: int):
    """Boxes (N, 4) and centre pixels (N, 2) of craters, see crater_boxes_px."""
    lon_c = np.atleast_1d(np.asarray(lon_deg, dtype=float))
    lat_c = np.atleast_1d(np.asarray(lat_deg, dtype=float))
    diameter_km = np.atleast_1d(np.asarray(diameter_km, dtype=float))
    lon_c, lat_c, diameter_km = np.broadcast_arrays(lon_c, lat_c, diameter_km)
    rim_lon, rim_lat = rim_lonlat(lon_c, lat_c, diameter_km, n_points)
    xc, yc = grid.lonlat_to_xy(lon_c, lat_c)
    xr, yr = grid.lonlat_to_xy(rim_lon, rim_lat)
    period = grid._x_period()
    polar = np.zeros(lon_c.shape, dtype=bool)
    if period is not None:
        # Cylindrical: keep the rim on the crater's side of the projection's seam.
        xr = xc[:, None] + (xr - xc[:, None] + period / 2.0) % period - period / 2.0
        radius_deg = np.degrees(diameter_km * 500.0 / MOON_RADIUS_M)
        north, south = lat_c + radius_deg >= 90.0, lat_c - radius_deg <= -90.0
        polar = north | south
    cols, rows = grid.xy_to_pixel(xr, yr)
    boxes = np.stack([cols.min(axis=1), rows.min(axis=1), cols.max(axis=1), rows.max(axis=1)], axis=1)
    if polar.any():
        # The rim encloses a pole: it spans all longitudes, so the box spans the world's
        # width centred on the crater and reaches the pole's row.
        _, y_pole_n = grid.lonlat_to_xy(lon_c, np.full(lon_c.shape, 90.0))
        _, y_pole_s = grid.lonlat_to_xy(lon_c, np.full(lon_c.shape, -90.0))
        ys = np.concatenate([yr, np.where(north, y_pole_n, yr[:, 0])[:, None],
                             np.where(south, y_pole_s, yr[:, 0])[:, None]], axis=1)
        corner_x = np.stack([xc - period / 2.0, xc + period / 2.0] * 2, axis=1)
        corner_y = np.stack([ys.min(axis=1)] * 2 + [ys.max(axis=1)] * 2, axis=1)
        pc, pr = grid.xy_to_pixel(corner_x, corner_y)
        polar_boxes = np.stack([pc.min(axis=1), pr.min(axis=1), pc.max(axis=1), pr.max(axis=1)], axis=1)
        if not grid.crs.is_geographic and _projection(grid.crs.to_wkt())[3]:
            polar_boxes[:] = np.nan
        boxes[polar] = polar_boxes[polar]
    boxes[~np.isfinite(boxes).all(axis=1)] = np.nan
    centres = np.stack(grid.xy_to_pixel(xc, yc), axis=1)
    return boxes, centres


def crater_boxes_px(grid: PixelGrid, lon_deg, lat_deg, diameter_km, n_points: int = 72) -> np.ndarray:
    """XYXY float pixel boxes (N, 4) of craters' rim circles projected into ``grid``.

    Width and height carry the projection's distortion. In cylindrical projections
    (simple cylindrical, Mercator, geographic) the rim is unwrapped around the crater's
    centre, so a crater on the seam gets one box that overhangs the grid's edge
    (coordinates < 0 or > width), not a box spanning the whole map. A rim that
    encloses a pole is a closed curve in polar stereographic (its box is exact); in a
    cylindrical grid it spans all longitudes, so its box is the world's full width
    centred on the crater, from the rim's far side to the pole's row, or all NaN in
    Mercator, whose pole lies at infinity. Any box the projection cannot reach is NaN.
    """
    return _project_craters(grid, lon_deg, lat_deg, diameter_km, n_points)[0]


def boxes_px_to_craters(grid: PixelGrid, boxes_xyxy, *, refine_iterations: int = 5
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Craters (lon_deg, lat_deg, diameter_km) from XYXY pixel boxes: the inverse of
    :func:`crater_boxes_px`, used by atlas inference.

    First guess: the box centre pixel's lon/lat, and the mean great-circle length
    between the midpoints of opposite box sides (measured on the sphere, so right in
    any projection). Then ``refine_iterations`` fixed-point steps re-project the
    estimate and correct centre and size by the pixel mismatch, removing the small
    bias of the first guess (a projected circle's box is not centred on the projected
    centre in Mercator or stereographic).
    """
    boxes = np.asarray(boxes_xyxy, dtype=float).reshape(-1, 4)
    x0, y0, x1, y1 = boxes.T
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    lon, lat = grid.pixel_to_lonlat(cx, cy)
    left, right = grid.pixel_to_lonlat(x0, cy), grid.pixel_to_lonlat(x1, cy)
    top, bottom = grid.pixel_to_lonlat(cx, y0), grid.pixel_to_lonlat(cx, y1)
    diameter_km = 0.5 * (great_circle_distance_m(*left, *right) + great_circle_distance_m(*top, *bottom)) / 1000.0
    diameter_km = np.atleast_1d(diameter_km)
    target_w, target_h = x1 - x0, y1 - y0
    for _ in range(refine_iterations):
        est, centre = _project_craters(grid, lon, lat, diameter_km, 72)
        ok = np.isfinite(est).all(axis=1) & np.isfinite(centre).all(axis=1)
        if not ok.any():
            break
        # The estimate's box-centre offset from its projected centre is local, so it
        # transfers to the target box; the size is corrected by the mean scale ratio.
        new_c = cx - ((est[:, 0] + est[:, 2]) / 2.0 - centre[:, 0])
        new_r = cy - ((est[:, 1] + est[:, 3]) / 2.0 - centre[:, 1])
        new_lon, new_lat = grid.pixel_to_lonlat(new_c, new_r)
        scale = np.sqrt((target_w * target_h) / ((est[:, 2] - est[:, 0]) * (est[:, 3] - est[:, 1])))
        ok &= np.isfinite(new_lon) & np.isfinite(new_lat) & np.isfinite(scale) & (scale > 0)
        lon = np.where(ok, new_lon, lon)
        lat = np.where(ok, new_lat, lat)
        diameter_km = np.where(ok, diameter_km * scale, diameter_km)
    return np.asarray(normalize_lon(lon)).reshape(-1), np.asarray(lat).reshape(-1), np.asarray(diameter_km).reshape(-1)
