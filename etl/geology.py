"""Geologic units around craters: the stratigraphic attributes of the age network.

Two sources, one interface (:class:`UnitSource`):

- :class:`UnitRaster`: a map of unit codes (the synthetic world's ``units.tif``: 0 highlands,
  1 maria), sampled on each crater's crop grid (:func:`etl.crops.extract_layer`);
- :class:`UnitLabelPoints`: the label points of the USGS 2013 lunar geologic map
  (``quad, unit, unit_name, group, epoch, lon, lat``), the only geology available on the real
  Moon here: the nearest label, the labels within the rim and around it, by system.

Units that are crater materials record the age of the crater they belong to: near a crater
they *are* its label (the real-Moon age labels were derived from them). They can be switched
off (``crater_material_units=False``): their points or codes are ignored and the columns that
only they fill disappear, so the attribute schema says which way a model was trained.
"""
from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from etl.age_classes import AgeClass
from etl.moon import MOON_RADIUS_M, chord_for_distance, unit_vector

__all__ = ["UnitLabelPoints", "UnitRaster", "UnitSource", "epoch_classes", "is_crater_material"]

#: Labels this many crater radii from the centre count as "around" the crater (rim at 1).
AROUND_RADII = 3.0
_CRATER_WORD = re.compile(r"crater", re.IGNORECASE)


def epoch_classes(epoch: str) -> tuple[AgeClass, ...]:
    """The age classes a USGS epoch label allows, oldest first.

    ``Imbrian System`` -> (Ic,); ``Nectarian and pre-Nectarian Systems`` -> (pNc, Nc);
    ``Eratosthenian or Imbrian System`` -> (Ic, Ec); several labels joined by ``|`` -> their
    union. ``pre-Imbrian`` is older than the Imbrian: pre-Nectarian or Nectarian.
    Raises ValueError on a label that names no known system.
    """
    found: set[AgeClass] = set()
    for token in re.split(r"\||,|\band\b|\bor\b", str(epoch)):
        key = re.sub(r"\bsystems?\b", "", token, flags=re.IGNORECASE).strip().lower()
        if not key:
            continue
        if key.replace("-", " ") == "pre imbrian":
            found.update((AgeClass.PRE_NECTARIAN, AgeClass.NECTARIAN))
        else:
            found.add(AgeClass.parse(key))
    if not found:
        raise ValueError(f"epoch label {epoch!r} names no lunar system")
    return tuple(sorted(found))


def is_crater_material(unit_name, group) -> np.ndarray:
    """True for USGS units that are crater materials (their name or group says crater)."""
    name = pd.Series(np.atleast_1d(unit_name), dtype=object).fillna("").astype(str)
    grp = pd.Series(np.atleast_1d(group), dtype=object).fillna("").astype(str)
    return (name.str.contains(_CRATER_WORD) | grp.str.contains(_CRATER_WORD)).to_numpy()


class UnitSource(abc.ABC):
    """Where stratigraphic attributes come from."""

    @abc.abstractmethod
    def attributes(self, craters: pd.DataFrame, *, settings, crater_material_units: bool = True,
                   progress: bool = False) -> tuple[pd.DataFrame, list[str]]:
        """One row per crater (same order), float64 columns named ``strat_*``, and their units
        ("1" for fractions and indicators). NaN where the source says nothing."""

    def describe(self) -> str:
        return type(self).__name__


@dataclass
class UnitRaster(UnitSource):
    """A raster of unit codes. Attributes: for each unit, the share of the crater's interior
    (r <= R) and of its surroundings (R < r <= 3 R) that it covers, and whether it lies under
    the centre. Codes in ``crater_material_codes`` are crater materials."""

    path: str | Path
    unit_names: dict[int, str]
    crater_material_codes: tuple[int, ...] = ()
    assume_crs: object = None

    @classmethod
    def synthetic(cls, world_dir: str | Path) -> "UnitRaster":
        """The synthetic world's units.tif (its codes and names come from etl.synthetic)."""
        from etl.synthetic import UNIT_NAMES

        return cls(Path(world_dir) / "units.tif", dict(UNIT_NAMES))

    def describe(self) -> str:
        return f"UnitRaster({Path(self.path).name}, {self.unit_names})"

    def attributes(self, craters, *, settings, crater_material_units=True, progress=False):
        from etl.crops import extract_layer

        codes = extract_layer(self.path, craters, settings=settings, categorical=True,
                              assume_crs=self.assume_crs, progress=progress)
        r = settings.radius_grid()
        reach = min(AROUND_RADII, settings.side_diameters)
        zones = {"rim": r <= 1.0, "around": (r > 1.0) & (r <= reach)}
        centre = r <= max(r.min() * 1.01, 0.5 / settings.radius_px)
        kept = {c: n for c, n in sorted(self.unit_names.items())
                if crater_material_units or c not in self.crater_material_codes}
        if not crater_material_units:
            # Crater materials are not evidence: their pixels count as unmapped.
            codes = np.where(np.isin(codes, self.crater_material_codes), np.nan, codes)
        columns: dict[str, np.ndarray] = {}
        mapped = {z: np.isfinite(codes[:, m]).sum(axis=1) for z, m in zones.items()}
        for code, name in kept.items():
            for zone, mask in zones.items():
                hits = (codes[:, mask] == code).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    columns[f"strat_{name}_{zone}_frac"] = np.where(mapped[zone] > 0, hits / mapped[zone], np.nan)
            at = codes[:, centre]
            with np.errstate(invalid="ignore"):
                columns[f"strat_{name}_at_centre"] = np.where(np.isfinite(at).any(axis=1),
                                                              (at == code).any(axis=1).astype(float), np.nan)
        frame = pd.DataFrame(columns, index=craters.index, dtype=np.float64)
        return frame, ["1"] * frame.shape[1]


# Broad kinds of terrain a label can be (besides its system), decided from its name and group.
_KINDS = ("mare", "basin", "terra", "crater")


def _kind(unit_name: str, group: str, crater: bool) -> str:
    text = f"{unit_name} {group}".lower()
    if crater:
        return "crater"
    if "mare" in text or "dark" in text:
        return "mare"
    if "basin" in text or "orientale" in text:
        return "basin"
    return "terra"


@dataclass
class UnitLabelPoints(UnitSource):
    """Geologic-map label points (``lon, lat, unit, unit_name, group, epoch``).

    Attributes, each from the points kept (crater materials dropped when switched off):
    ``strat_nearest_<code>`` (the nearest label's systems, weights summing to 1; NaN when it
    lies beyond ``nearest_max_km``) and its distance in radii; ``strat_rim_<code>`` and
    ``strat_around_<code>`` (share of the labels within the rim, and between 1 and 3 radii, by
    system; a label allowing k systems counts 1/k for each) with their counts; the share of
    labels within 3 radii of each kind (mare, basin, terra, and crater when on); and, only with
    crater materials on, ``strat_crater_rim_<code>``: the systems of crater-material labels
    within the rim, which is the crater's own mapped age.
    """

    points: pd.DataFrame
    nearest_max_km: float = 300.0
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_csv(cls, path: str | Path, **kwargs) -> "UnitLabelPoints":
        return cls(pd.read_csv(path), **kwargs)

    def describe(self) -> str:
        return f"UnitLabelPoints({len(self.points)} points, nearest_max_km={self.nearest_max_km})"

    def _prepared(self, crater_material_units: bool):
        key = bool(crater_material_units)
        if key not in self._cache:
            pts = self.points
            crater = is_crater_material(pts["unit_name"].to_numpy(), pts["group"].to_numpy())
            keep = np.ones(len(pts), dtype=bool) if key else ~crater
            weights = np.zeros((len(pts), len(AgeClass)))
            for i, epoch in enumerate(pts["epoch"].to_numpy()):
                try:
                    classes = epoch_classes(epoch)
                except ValueError:
                    keep[i] = False  # a label without a system says nothing about age
                    continue
                weights[i, list(classes)] = 1.0 / len(classes)
            names, groups = pts["unit_name"].fillna("").astype(str), pts["group"].fillna("").astype(str)
            kinds = np.array([_KINDS.index(_kind(n, g, c)) for n, g, c in zip(names, groups, crater)])
            xyz = unit_vector(pts["lon"].to_numpy(dtype=float), pts["lat"].to_numpy(dtype=float))
            idx = np.flatnonzero(keep)
            self._cache[key] = (cKDTree(xyz[idx]), weights[idx], kinds[idx], crater[idx])
        return self._cache[key]

    def attributes(self, craters, *, settings=None, crater_material_units=True, progress=False):
        tree, weights, kinds, crater = self._prepared(crater_material_units)
        n = len(craters)
        codes = [c.code for c in AgeClass]
        lon = craters["lon"].to_numpy(dtype=float)
        lat = craters["lat"].to_numpy(dtype=float)
        radius_m = craters["diameter_km"].to_numpy(dtype=float) * 500.0
        xyz = unit_vector(lon, lat)
        out: dict[str, np.ndarray] = {}

        def put(name, values):
            out[name] = np.asarray(values, dtype=float)

        nearest = np.full((n, len(AgeClass)), np.nan)
        nearest_radii = np.full(n, np.nan)
        if tree.n > 0:
            chord, j = tree.query(xyz)
            dist_m = 2.0 * MOON_RADIUS_M * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
            close = dist_m <= self.nearest_max_km * 1000.0
            nearest[close] = weights[j[close]]
            nearest_radii = np.where(close, dist_m / radius_m, np.nan)
        for k, code in enumerate(codes):
            put(f"strat_nearest_{code}", nearest[:, k])
        put("strat_nearest_distance_radii", nearest_radii)

        rim = np.full((n, len(AgeClass)), np.nan)
        around = np.full((n, len(AgeClass)), np.nan)
        crater_rim = np.full((n, len(AgeClass)), np.nan)
        kind_frac = np.full((n, len(_KINDS)), np.nan)
        rim_count, around_count = np.zeros(n), np.zeros(n)
        for i in range(n):
            if not (np.isfinite(xyz[i]).all() and radius_m[i] > 0):
                rim_count[i] = around_count[i] = np.nan
                continue
            reach = tree.query_ball_point(xyz[i], chord_for_distance(AROUND_RADII * radius_m[i])) if tree.n else []
            if not reach:
                continue
            reach = np.asarray(reach)
            d_m = 2.0 * MOON_RADIUS_M * np.arcsin(np.clip(np.linalg.norm(tree.data[reach] - xyz[i], axis=1) / 2, 0, 1))
            inside = d_m <= radius_m[i]
            rim_count[i], around_count[i] = inside.sum(), (~inside).sum()
            if inside.any():
                rim[i] = weights[reach[inside]].mean(axis=0)
                mat = inside & crater[reach]
                if mat.any():
                    crater_rim[i] = weights[reach[mat]].mean(axis=0)
            if (~inside).any():
                around[i] = weights[reach[~inside]].mean(axis=0)
            kind_frac[i] = np.bincount(kinds[reach], minlength=len(_KINDS)) / len(reach)
        for k, code in enumerate(codes):
            put(f"strat_rim_{code}", rim[:, k])
        put("strat_rim_count", rim_count)
        for k, code in enumerate(codes):
            put(f"strat_around_{code}", around[:, k])
        put("strat_around_count", around_count)
        for k, kind in enumerate(_KINDS):
            if kind == "crater" and not crater_material_units:
                continue
            put(f"strat_{kind}_near_frac", kind_frac[:, k])
        if crater_material_units:
            for k, code in enumerate(codes):
                put(f"strat_crater_rim_{code}", crater_rim[:, k])
        frame = pd.DataFrame(out, index=craters.index, dtype=np.float64)
        units = ["radii" if c.endswith("_radii") else "count" if c.endswith("_count") else "1" for c in frame.columns]
        return frame, units
