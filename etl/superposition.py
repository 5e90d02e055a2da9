"""Relative-age evidence around a crater that a geologist reads and that its own label does not give:
superposition on a crater catalogue, the ejecta of dated basins, and bright rays on an albedo map.

The lunar time scale is stratigraphic (Wilhelms 1987): a crater whose rim is cut by another is older
than it, a crater with an intact rim on a basin's ejecta is younger than the basin, and older surfaces
have gathered more craters per unit area. None of that needs the crater's own age or the map units
inside its rim, so it is fair evidence with crater-material units switched off:

- :func:`superposition_attributes`: from the crater table itself (every known crater of the area, as
  :func:`etl.attributes.crater_attributes` gets it): craters superposed on the floor and on the
  ejecta (smaller ones, centred within 1 and 1-2 radii), the count of catalogue-size craters per
  unit area over the crater and its ejecta and over the surrounding terrain, smaller craters
  sitting on its rim (it is older than them) and larger craters whose rim or floor it sits on (it
  is younger than them);
- :func:`basin_attributes`: distance, in basin radii, to the nearest basin of each system among
  the dated basins of :data:`LUNAR_BASINS` (a crater with an intact rim within about 2-3 radii
  is younger than the basin), and flags for lying on their ejecta;
- :func:`ray_attributes`: brightness of wide annuli (to ten radii) against the far field on an
  albedo map (Copernican craters keep bright halos and rays), and the azimuthal contrast of
  the near field (rays are radial streaks).

:class:`CraterContext` adds them to any :class:`etl.geology.UnitSource`, so a crater set gets them
through the ``units`` argument that the age net already passes on (no change to the attribute
code): the columns are prefixed ``strat_sup_``, ``strat_basin_`` and ``strat_ray_``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from etl.age_classes import AgeClass
from etl.geology import UnitSource
from etl.moon import MOON_RADIUS_M, chord_for_distance, unit_vector

__all__ = ["BASIN_EJECTA_RADII", "Basin", "CraterContext", "LUNAR_BASINS", "basin_attributes",
           "ray_attributes", "superposition_attributes"]


@dataclass(frozen=True)
class Basin:
    name: str
    lon: float            # degrees, -180..180
    lat: float            # degrees
    diameter_km: float
    age: AgeClass


#: Multi-ring basins with their system after Wilhelms (1987, tables 8.1 and 9.1). West of 0 degrees, centres
#: and main-rim diameters as the Head et al. (2010) catalogue lists them (its largest entries), so that they
#: are measured on the same scale as the craters; a basin of that catalogue of uncertain identity or age is
#: left out rather than guessed. East of 0, the Imbrian and Nectarian basins whose ejecta reach a dated
#: surface, with approximate centres and main-rim diameters after Wilhelms (1987) (to a degree and ~10 %,
#: not yet checked line by line against his table: a basin's ejecta span hundreds of kilometres, and
#: only their reach into the western hemisphere is used today); the eastern pre-Nectarian basins are
#: not listed.
LUNAR_BASINS: tuple[Basin, ...] = (
    Basin("Orientale", -94.55658, -19.73452, 928.47, AgeClass.IMBRIAN),
    Basin("Imbrium", -17.40677, 33.46348, 1113.84, AgeClass.IMBRIAN),
    Basin("Humorum", -39.69673, -24.68699, 407.69, AgeClass.NECTARIAN),
    Basin("Mendel-Rydberg", -93.69735, -50.09794, 635.87, AgeClass.NECTARIAN),
    Basin("Hertzsprung", -129.15710, 2.02470, 549.39, AgeClass.NECTARIAN),
    Basin("Korolev", -157.47008, -4.44301, 417.14, AgeClass.NECTARIAN),
    Basin("Bailly", -68.79587, -67.18128, 299.36, AgeClass.NECTARIAN),
    Basin("South Pole-Aitken", -170.0, -54.0, 2050.0, AgeClass.PRE_NECTARIAN),
    Basin("Nubium", -15.37247, -18.62889, 835.45, AgeClass.PRE_NECTARIAN),
    Basin("Apollo", -151.72187, -36.06581, 475.82, AgeClass.PRE_NECTARIAN),
    Basin("Dirichlet-Jackson", -158.16442, 13.45214, 393.55, AgeClass.PRE_NECTARIAN),
    Basin("Schiller-Zucchius", -45.26717, -55.45676, 350.25, AgeClass.PRE_NECTARIAN),
    Basin("Lorentz", -97.09983, 34.36310, 333.28, AgeClass.PRE_NECTARIAN),
    Basin("Coulomb-Sarton", -122.53395, 51.34935, 315.77, AgeClass.PRE_NECTARIAN),
    Basin("Birkhoff", -147.24745, 59.27628, 308.09, AgeClass.PRE_NECTARIAN),
    Basin("Schrodinger", 133.5, -75.0, 320.0, AgeClass.IMBRIAN),
    Basin("Serenitatis", 19.0, 26.0, 920.0, AgeClass.NECTARIAN),
    Basin("Crisium", 59.0, 17.0, 1060.0, AgeClass.NECTARIAN),
    Basin("Nectaris", 34.0, -15.0, 860.0, AgeClass.NECTARIAN),
    Basin("Moscoviense", 147.0, 26.0, 640.0, AgeClass.NECTARIAN),
    Basin("Humboldtianum", 82.0, 57.0, 650.0, AgeClass.NECTARIAN),
    Basin("Sikorsky-Rittenhouse", 110.0, -68.5, 310.0, AgeClass.NECTARIAN),
)

#: A basin's continuous ejecta and secondaries reach about this many basin radii from its centre.
BASIN_EJECTA_RADII = 2.5
#: Distances to basins are clipped here (radii): farther, a basin says nothing about a crater.
_BASIN_FAR_RADII = 6.0
#: A basin counts for a crater only when it is this much larger (a crater is no basin's ejecta, nor its own).
_BASIN_MIN_SIZE_RATIO = 1.5
#: Superposed craters: at most this fraction of the crater's diameter (twins and near-duplicates are no evidence).
_SUPERPOSED_MAX_RATIO = 0.5
#: Rim crossing: the other crater's centre lies within this many of its own radii of the rim circle.
_RIM_CROSS_RADII = 1.0
#: A host is a crater at least this much larger whose rim holds this crater's centre.
_HOST_MIN_RATIO = 1.5
#: The terrain's crater density is counted in a disc of this radius around the crater, km (at least 3 radii).
_TERRAIN_RADIUS_KM = 200.0


def _arc_m(xyz_a: np.ndarray, xyz_b: np.ndarray) -> np.ndarray:
    chord = np.linalg.norm(xyz_a - xyz_b, axis=-1)
    return 2.0 * MOON_RADIUS_M * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))


def _cap_area_km2(radius_km) -> np.ndarray:
    """Area of a spherical cap of this surface radius on the Moon, km^2."""
    r = MOON_RADIUS_M / 1000.0
    return 2.0 * math.pi * r * r * (1.0 - np.cos(np.minimum(np.asarray(radius_km, float) / r, math.pi)))


def superposition_attributes(craters: pd.DataFrame, *, min_diameter_km: float = 20.0
                             ) -> tuple[pd.DataFrame, list[str]]:
    """Superposition relations of every crater with the others of ``craters`` (lon, lat, diameter_km).

    ``min_diameter_km``: the catalogue's completeness limit; densities count only craters at least this
    large (an atlas's smaller detections would otherwise make them depend on what was added).
    Columns (``strat_sup_*``): ``floor_count`` and ``ejecta_count`` (craters of at most half the
    diameter centred within 1 radius, and within 1-2 radii), ``density_per_1e6km2`` (those of them
    above the limit per 10^6 km^2 of the 2-radius disc), ``terrain_density_per_1e6km2`` (every other
    crater above the limit within max(200 km, 3 radii)), ``rim_cut_count`` (smaller craters whose
    rim crosses this crater's rim: it is older than them), ``on_larger_rim_count`` (larger craters
    whose rim this crater's rim crosses: it is younger), ``host_count`` (craters >= 1.5 x larger
    holding its centre inside their rim) and ``log10_host_ratio`` (log10 of the smallest host's
    diameter over this one's; 0 without a host).
    """
    lon = craters["lon"].to_numpy(float)
    lat = craters["lat"].to_numpy(float)
    d_km = craters["diameter_km"].to_numpy(float)
    n = len(craters)
    ok = np.isfinite(lon) & np.isfinite(lat) & np.isfinite(d_km) & (d_km > 0)
    xyz = unit_vector(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
    idx_ok = np.flatnonzero(ok)
    tree = cKDTree(xyz[idx_ok]) if idx_ok.size else None
    r_m = d_km * 500.0
    r_max_m = float(r_m[ok].max()) if idx_ok.size else 0.0
    names = ["floor_count", "ejecta_count", "density_per_1e6km2", "terrain_density_per_1e6km2", "rim_cut_count",
             "on_larger_rim_count", "host_count", "log10_host_ratio"]
    out = {k: np.full(n, np.nan) for k in names}
    for i in idx_ok:
        terrain_km = max(_TERRAIN_RADIUS_KM, 3.0 * d_km[i] / 2.0)
        reach_m = max(2.0 * r_m[i], terrain_km * 1000.0, r_m[i] + r_max_m)
        near = idx_ok[tree.query_ball_point(xyz[i], chord_for_distance(reach_m))]
        near = near[near != i]
        dist = _arc_m(xyz[near], xyz[i])
        rj = r_m[near]
        smaller = d_km[near] <= _SUPERPOSED_MAX_RATIO * d_km[i]
        floor = smaller & (dist < r_m[i])
        ejecta = smaller & (dist >= r_m[i]) & (dist < 2.0 * r_m[i])
        complete = d_km[near] >= min_diameter_km
        out["floor_count"][i] = floor.sum()
        out["ejecta_count"][i] = ejecta.sum()
        out["density_per_1e6km2"][i] = ((floor | ejecta) & complete).sum() / _cap_area_km2(2.0 * d_km[i] / 2.0) * 1e6
        out["terrain_density_per_1e6km2"][i] = ((dist <= terrain_km * 1000.0) & complete).sum() \
            / _cap_area_km2(terrain_km) * 1e6
        crosses = np.abs(dist - r_m[i]) < _RIM_CROSS_RADII * rj
        out["rim_cut_count"][i] = (crosses & (d_km[near] < d_km[i])).sum()
        on_rim = (np.abs(dist - rj) < _RIM_CROSS_RADII * r_m[i]) & (d_km[near] > d_km[i])
        out["on_larger_rim_count"][i] = on_rim.sum()
        host = (dist < rj) & (d_km[near] >= _HOST_MIN_RATIO * d_km[i])
        out["host_count"][i] = host.sum()
        out["log10_host_ratio"][i] = math.log10(d_km[near][host].min() / d_km[i]) if host.any() else 0.0
    frame = pd.DataFrame({f"strat_sup_{k}": v for k, v in out.items()}, index=craters.index, dtype=np.float64)
    units = ["count", "count", "1/1e6km2", "1/1e6km2", "count", "count", "count", "log10(1)"]
    return frame, units


def basin_attributes(craters: pd.DataFrame, basins=LUNAR_BASINS) -> tuple[pd.DataFrame, list[str]]:
    """Distance from each crater to the nearest dated basin of each system (pNc, Nc, Ic), in that
    basin's radii and clipped at 6 (``strat_basin_<code>_distance_radii``), and whether the crater
    lies within :data:`BASIN_EJECTA_RADII` of one (``strat_basin_<code>_ejecta``). A basin counts only
    for craters at most 1/1.5 of its diameter: a crater is not on its own ejecta."""
    lon = craters["lon"].to_numpy(float)
    lat = craters["lat"].to_numpy(float)
    d_km = craters["diameter_km"].to_numpy(float)
    ok = np.isfinite(lon) & np.isfinite(lat) & np.isfinite(d_km)
    xyz = unit_vector(np.where(ok, lon, 0.0), np.where(ok, lat, 0.0))
    systems = sorted({b.age for b in basins})
    out, units = {}, []
    for age in systems:
        members = [b for b in basins if b.age == age]
        bxyz = unit_vector([b.lon for b in members], [b.lat for b in members])
        b_r_m = np.array([b.diameter_km for b in members]) * 500.0
        dist = _arc_m(xyz[:, None, :], bxyz[None, :, :])                    # (N, B)
        radii = dist / b_r_m[None, :]
        counts = b_r_m[None, :] * 2.0 / 1000.0 >= _BASIN_MIN_SIZE_RATIO * d_km[:, None]
        radii = np.where(counts, radii, np.inf)
        nearest = np.minimum(radii.min(axis=1), _BASIN_FAR_RADII)
        out[f"strat_basin_{age.code}_distance_radii"] = np.where(ok, nearest, np.nan)
        out[f"strat_basin_{age.code}_ejecta"] = np.where(ok, (nearest <= BASIN_EJECTA_RADII).astype(float), np.nan)
        units += ["radii", "1"]
    return pd.DataFrame(out, index=craters.index, dtype=np.float64), units


# Rays: annuli in crater radii, against the far field (the crop reaches 10 radii along its axes).
_RAY_SIDE_DIAMETERS = 10.0
_RAY_SIZE_PX = 48
_RAY_FAR = (6.0, 10.0)
_RAY_RINGS = ((0.0, 0.9), (1.0, 2.0), (2.0, 4.0), (4.0, 6.0))
_RAY_SECTORS = 24
_RAY_SECTOR_RING = (1.5, 5.0)


def ray_attributes(craters: pd.DataFrame, dom_path, *, assume_crs=None, progress: bool = False
                   ) -> tuple[pd.DataFrame, list[str]]:
    """Wide-field albedo around each crater from a DOM / albedo map: the median brightness of the
    interior and of the 1-2, 2-4 and 4-6 radius annuli over that of the 6-10 radius far field
    (``strat_ray_ratio_<a>_<b>``), the share of the 1.5-5 radius annulus brighter than the far field's
    90th percentile (``strat_ray_bright_frac``) and the spread of 24 azimuthal sectors' medians in that
    annulus over the far field (``strat_ray_azimuthal_contrast``: rays are radial streaks). NaN where
    the map has no data around the crater."""
    from etl.crops import CropSettings, extract_layer

    settings = CropSettings(size_px=_RAY_SIZE_PX, side_diameters=_RAY_SIDE_DIAMETERS)
    crops = extract_layer(dom_path, craters, settings=settings, assume_crs=assume_crs, progress=progress)
    r = settings.radius_grid()
    s = settings.size_px
    offsets = np.arange(s) + 0.5 - s / 2.0
    azimuth = np.arctan2(offsets[None, :], offsets[::-1, None])
    sector = ((azimuth + math.pi) / (2.0 * math.pi) * _RAY_SECTORS).astype(int) % _RAY_SECTORS
    far = (r >= _RAY_FAR[0]) & (r <= _RAY_FAR[1])
    band = (r >= _RAY_SECTOR_RING[0]) & (r < _RAY_SECTOR_RING[1])
    n = len(craters)
    names = [f"ratio_{a:g}_{b:g}" for a, b in _RAY_RINGS] + ["bright_frac", "azimuthal_contrast"]
    out = {k: np.full(n, np.nan) for k in names}
    for i in range(n):
        img = crops[i]
        fin = np.isfinite(img)
        back = img[far & fin]
        if back.size < 20:
            continue
        level = float(np.median(back))
        if not level > 0:
            continue
        for (a, b), name in zip(_RAY_RINGS, names):
            ring = img[(r >= a) & (r < b) & fin]
            out[name][i] = float(np.median(ring)) / level if ring.size else np.nan
        ring = img[band & fin]
        out["bright_frac"][i] = float(np.mean(ring > np.percentile(back, 90))) if ring.size else np.nan
        medians = [np.median(img[band & fin & (sector == k)]) for k in range(_RAY_SECTORS)
                   if (band & fin & (sector == k)).any()]
        out["azimuthal_contrast"][i] = float(np.std(medians)) / level if len(medians) >= _RAY_SECTORS // 2 else np.nan
    frame = pd.DataFrame({f"strat_ray_{k}": v for k, v in out.items()}, index=craters.index, dtype=np.float64)
    return frame, ["1"] * frame.shape[1]


@dataclass
class CraterContext(UnitSource):
    """A :class:`~etl.geology.UnitSource` (or none) plus the evidence of this module: ``superposition``
    (:func:`superposition_attributes` on the crater table it is given), ``basins``
    (:func:`basin_attributes`; an empty tuple: none) and, with ``albedo`` (a DOM / albedo raster path),
    :func:`ray_attributes`. None of them reads crater-material units, so
    ``crater_material_units`` only reaches the wrapped source.

    ``reference`` (a crater table: lon, lat, diameter_km; None: the craters given are the table): the
    superposition of each crater is measured against these craters too (an atlas dated against the
    catalogue its model was trained with). A reference crater that matches a given crater
    (:data:`etl.matching.PROJECT_RULE`) is that crater, not a neighbour, and is left out."""

    units: UnitSource | None = None
    superposition: bool = True
    basins: tuple = LUNAR_BASINS
    albedo: str | Path | None = None
    min_diameter_km: float = 20.0
    assume_crs: object = field(default=None, repr=False)
    reference: pd.DataFrame | None = field(default=None, repr=False)
    reference_name: str = ""     # how describe() names the reference table (cache keys, provenance)

    def describe(self) -> str:
        inner = self.units.describe() if self.units is not None else "no units"
        ref = ""
        if self.reference is not None:
            ref = f" against {self.reference_name or 'a table'} ({len(self.reference)} craters)"
        return (f"CraterContext({inner}; superposition={self.superposition} (>= {self.min_diameter_km:g} km){ref}, "
                f"basins={[b.name for b in self.basins]}, albedo={Path(self.albedo).name if self.albedo else None})")

    def _superposition(self, craters: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        if self.reference is None or len(self.reference) == 0:
            return superposition_attributes(craters, min_diameter_km=self.min_diameter_km)
        from etl.matching import has_match

        ref = self.reference[["lon", "lat", "diameter_km"]]
        same = has_match(ref["lon"], ref["lat"], ref["diameter_km"], craters["lon"], craters["lat"],
                         craters["diameter_km"])
        table = pd.concat([craters[["lon", "lat", "diameter_km"]].reset_index(drop=True),
                           ref[~same].reset_index(drop=True)], ignore_index=True)
        frame, units = superposition_attributes(table, min_diameter_km=self.min_diameter_km)
        return frame.iloc[:len(craters)].set_axis(craters.index), units

    def attributes(self, craters, *, settings=None, crater_material_units=True, progress=False):
        parts, units = [], []
        if self.units is not None:
            frame, u = self.units.attributes(craters, settings=settings, crater_material_units=crater_material_units,
                                             progress=progress)
            parts.append(frame)
            units += list(u)
        if self.superposition:
            frame, u = self._superposition(craters)
            parts.append(frame)
            units += u
        if self.basins:
            frame, u = basin_attributes(craters, self.basins)
            parts.append(frame)
            units += u
        if self.albedo is not None:
            frame, u = ray_attributes(craters, self.albedo, assume_crs=self.assume_crs, progress=progress)
            parts.append(frame)
            units += u
        if not parts:
            return pd.DataFrame(index=craters.index, dtype=np.float64), []
        return pd.concat([p.reset_index(drop=True) for p in parts], axis=1).set_axis(craters.index), units
