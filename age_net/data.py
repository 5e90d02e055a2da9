"""Data for the age net: crater crops and attributes in memory, their normalisation, and torch
Datasets that draw the noisy views (rotations, flips, illumination jitter) training needs.

Crops and attributes come from ``etl.crops`` / ``etl.attributes`` (their one owner), once per
crater set: ``build_crater_set`` extracts them and ``CraterSet.save/load`` keep them, so that
repeated trials and ablations never re-read the mosaics.

Normalisation keeps physical meaning:
* DEM: elevation minus the median of the crop's outer ring (beyond ``INPUT.DEM_RING_INNER_RADII``
  crater radii), divided by a fixed ``INPUT.DEM_SCALE_M``: a crater 400 m deep stays twice as deep
  as one 200 m deep. Per-crop min-max scaling would make every crater span [0, 1] and erase the
  relief that records its age.
* DOM: (value - mean) / std with the mean and std of the training crops' valid pixels.
* attributes: (value - mean) / std per attribute over the training craters (NaN-aware), NaN -> 0
  after standardisation, and a 0/1 mask column per attribute says which were missing.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from etl.age_classes import AgeClass

__all__ = ["OTHER_WORLD_COLUMN", "AgeCropDataset", "CraterSet", "InputStats", "append_unlabelled",
           "attribute_matrix", "augment", "build_crater_set", "context_source", "encode_labels", "fit_input_stats",
           "image_array", "unit_source"]

#: Standardised attributes are clipped to +-this many standard deviations (a wild value from a
#: degenerate crop must not dominate the MLP).
ATTRIBUTE_CLIP = 8.0

#: Column of ``CraterSet.craters`` that names the other world an extra unlabelled crater comes from
#: ('' or absent: the crater set's own world). Such craters lie in no block of the spatial split (their
#: lon/lat are another map's) and never carry a label: they are only ever Mean Teacher's unlabelled data.
OTHER_WORLD_COLUMN = "other_world"


def encode_labels(values) -> np.ndarray:
    """Age-class codes / names / indices -> class indices; missing (NaN, '', None) or -1 (the catalogue
    reader's unlabelled) -> -1 (unlabelled)."""
    out = np.full(len(values), -1, dtype=np.int64)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and np.isnan(v)) or (isinstance(v, str) and not v.strip()) \
                or v is pd.NA or (isinstance(v, (int, np.integer)) and v == -1):
            continue
        out[i] = int(AgeClass.parse(v))
    return out


@dataclass
class CraterSet:
    """Crops, attributes and labels of N craters, in the order of ``craters``."""

    craters: pd.DataFrame            # lon, lat, diameter_km (+ crater_id, age_class, ... as given)
    dom: np.ndarray | None           # float32 (N, S, S) DOM values as stored, NaN = nodata
    dem_m: np.ndarray | None         # float32 (N, S, S) elevation, metres, absolute
    valid: np.ndarray                # bool (N,): crop measurable
    reasons: list[str]               # why not, per crater ('' when valid)
    attributes: pd.DataFrame         # float64 (N, A), columns = schema.names, NaN = not measurable
    schema: object                   # etl.attributes.AttributeSchema
    labels: np.ndarray               # int64 (N,): class index, -1 = unlabelled
    crop_settings: dict = field(default_factory=dict)   # size_px, side_diameters
    sources: dict = field(default_factory=dict)         # dom, dem, units paths (provenance)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def size_px(self) -> int:
        return int(self.crop_settings["size_px"])

    @property
    def side_diameters(self) -> float:
        return float(self.crop_settings["side_diameters"])

    def subset(self, idx) -> "CraterSet":
        idx = np.asarray(idx)
        return CraterSet(
            craters=self.craters.iloc[idx].reset_index(drop=True),
            dom=None if self.dom is None else self.dom[idx], dem_m=None if self.dem_m is None else self.dem_m[idx],
            valid=self.valid[idx], reasons=[self.reasons[i] for i in idx],
            attributes=self.attributes.iloc[idx].reset_index(drop=True), schema=self.schema,
            labels=self.labels[idx], crop_settings=dict(self.crop_settings), sources=dict(self.sources))

    def select_attributes(self, patterns) -> "CraterSet":
        """The same craters with only the attributes matching ``patterns`` (fnmatch; empty: all),
        in their order, and the schema of that selection. Raises when a pattern matches nothing."""
        from fnmatch import fnmatchcase

        from etl.attributes import AttributeSchema

        patterns = list(patterns or [])
        if not patterns:
            return self
        unmatched = [p for p in patterns if not any(fnmatchcase(n, p) for n in self.schema.names)]
        if unmatched:
            raise ValueError(f"ATTRIBUTES.USE {unmatched} match no attribute of the crater set "
                             f"({len(self.schema.names)} attributes, schema {self.schema.version})")
        keep = [k for k, n in enumerate(self.schema.names) if any(fnmatchcase(n, p) for p in patterns)]
        schema = AttributeSchema(self.schema.version.split(":")[0] + ":" + AttributeSchema.build(
            [self.schema.names[k] for k in keep], [self.schema.units[k] for k in keep]).version.split(":")[1],
            tuple(self.schema.names[k] for k in keep), tuple(self.schema.units[k] for k in keep))
        return dataclasses.replace(self, attributes=self.attributes.iloc[:, keep], schema=schema)

    @property
    def other_world(self) -> np.ndarray:
        """bool (N,): the crater comes from another world (:data:`OTHER_WORLD_COLUMN`), unlabelled only."""
        if OTHER_WORLD_COLUMN not in self.craters.columns:
            return np.zeros(len(self), dtype=bool)
        return self.craters[OTHER_WORLD_COLUMN].fillna("").astype(str).str.len().to_numpy() > 0

    def save(self, path: str | Path) -> None:
        """One ``.npz`` (arrays) + the craters and attributes inside it as Parquet bytes + JSON."""
        import io

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf_c, buf_a = io.BytesIO(), io.BytesIO()
        self.craters.to_parquet(buf_c, index=False)
        self.attributes.to_parquet(buf_a, index=False)
        meta = dict(schema=self.schema.to_dict(), reasons=self.reasons, crop_settings=self.crop_settings,
                    sources=self.sources)
        arrays = dict(valid=self.valid, labels=self.labels, craters=np.frombuffer(buf_c.getvalue(), np.uint8),
                      attributes=np.frombuffer(buf_a.getvalue(), np.uint8),
                      meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
        if self.dom is not None:
            arrays["dom"] = self.dom
        if self.dem_m is not None:
            arrays["dem_m"] = self.dem_m
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "CraterSet":
        import io

        from etl.attributes import AttributeSchema

        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            return cls(craters=pd.read_parquet(io.BytesIO(z["craters"].tobytes())),
                       dom=z["dom"] if "dom" in z else None, dem_m=z["dem_m"] if "dem_m" in z else None,
                       valid=z["valid"], reasons=list(meta["reasons"]),
                       attributes=pd.read_parquet(io.BytesIO(z["attributes"].tobytes())),
                       schema=AttributeSchema.from_dict(meta["schema"]), labels=z["labels"],
                       crop_settings=meta["crop_settings"], sources=meta["sources"])


def append_unlabelled(cs: CraterSet, others: dict[str, CraterSet]) -> CraterSet:
    """``cs`` followed by the craters of other worlds (name -> crater set) as unlabelled craters.

    Their labels are dropped (-1) and :data:`OTHER_WORLD_COLUMN` holds their world's name, so that the
    spatial split leaves them out of its blocks and gives all of them to Mean Teacher's unlabelled pool
    (``age_net.engine.make_split``). Every set must have ``cs``'s attribute schema and crop settings:
    the network reads them through one normalisation. Raises ValueError otherwise, or on an empty name."""
    if not others:
        return cs
    parts = [cs]
    for name, other in others.items():
        if not str(name):
            raise ValueError("an unlabelled world needs a name (its directory)")
        cs.schema.check_matches(other.schema)
        if {k: v for k, v in other.crop_settings.items()} != {k: v for k, v in cs.crop_settings.items()}:
            raise ValueError(f"unlabelled world {name}: crops {other.crop_settings}, the crater set's "
                             f"{cs.crop_settings}")
        if (other.dom is None) != (cs.dom is None) or (other.dem_m is None) != (cs.dem_m is None):
            raise ValueError(f"unlabelled world {name}: not cropped from the same channels as the crater set")
        craters = other.craters.copy()
        craters[OTHER_WORLD_COLUMN] = str(name)
        if "age_class" in craters.columns:
            craters["age_class"] = None  # the labels never travel: no code path can read them
        parts.append(dataclasses.replace(other, craters=craters, labels=np.full(len(other), -1, dtype=np.int64)))
    own = cs.craters.copy()
    if OTHER_WORLD_COLUMN not in own.columns:
        own[OTHER_WORLD_COLUMN] = ""
    frames = [own] + [p.craters for p in parts[1:]]

    def cat(arrays):
        return None if arrays[0] is None else np.concatenate(arrays)

    return CraterSet(
        craters=pd.concat(frames, ignore_index=True), dom=cat([p.dom for p in parts]),
        dem_m=cat([p.dem_m for p in parts]), valid=np.concatenate([p.valid for p in parts]),
        reasons=[r for p in parts for r in p.reasons],
        attributes=pd.concat([p.attributes for p in parts], ignore_index=True), schema=cs.schema,
        labels=np.concatenate([p.labels for p in parts]), crop_settings=dict(cs.crop_settings),
        sources=dict(cs.sources, unlabelled_worlds=[str(n) for n in others]))


def build_crater_set(craters: pd.DataFrame, *, dom_path=None, dem_path=None, units=None, size_px: int = 64,
                     side_diameters: float = 3.0, crater_material_units: bool = True,
                     max_invalid_fraction: float = 0.05, assume_crs=None, label_column: str = "age_class",
                     attribute_size_px: int | None = None, progress: bool = False) -> CraterSet:
    """Extract crops (``etl.crops``) and attributes (``etl.attributes``) of ``craters`` (lon, lat,
    diameter_km; ``label_column`` when present gives the labels, missing = unlabelled).

    ``attribute_size_px`` (None: ``size_px``): the attributes are measured on crops of their own
    size, so that a network seeing small crops still gets the morphometry of finer ones (a 10 km
    crater in a 32 px crop of 3 diameters has pixels of 940 m, coarser than its degradation). A
    crater whose crops of either size are not measurable is not valid."""
    from etl.attributes import crater_attributes
    from etl.crops import CropSettings, extract_crops, native_windows

    craters = craters.reset_index(drop=True)
    settings = CropSettings(size_px=int(size_px), side_diameters=float(side_diameters))
    crops = extract_crops(craters, dom_path=dom_path, dem_path=dem_path, settings=settings, assume_crs=assume_crs,
                          progress=progress, max_invalid_fraction=max_invalid_fraction)
    attribute_crops = crops
    if attribute_size_px is not None and int(attribute_size_px) != settings.size_px:
        attribute_crops = extract_crops(craters, dom_path=dom_path, dem_path=dem_path, assume_crs=assume_crs,
                                        settings=CropSettings(size_px=int(attribute_size_px),
                                                              side_diameters=float(side_diameters)),
                                        progress=progress, max_invalid_fraction=max_invalid_fraction)
    native_dem = native_windows(dem_path, craters, assume_crs=assume_crs) if dem_path is not None else None
    attrs, schema = crater_attributes(craters, attribute_crops, units=units, native_dem=native_dem,
                                      crater_material_units=crater_material_units)
    valid = np.asarray(crops.valid, bool) & np.asarray(attribute_crops.valid, bool)
    reasons = [a or b for a, b in zip(crops.reasons, attribute_crops.reasons)]
    labels = encode_labels(craters[label_column].tolist()) if label_column in craters.columns \
        else np.full(len(craters), -1, dtype=np.int64)
    return CraterSet(craters=craters, dom=crops.dom, dem_m=crops.dem_m, valid=valid,
                     reasons=reasons, attributes=attrs.reset_index(drop=True), schema=schema,
                     labels=labels, crop_settings=dict(size_px=settings.size_px,
                                                       side_diameters=settings.side_diameters,
                                                       attribute_size_px=attribute_crops.settings.size_px),
                     sources=dict(dom=str(dom_path or ""), dem=str(dem_path or ""),
                                  units=units.describe() if units is not None else ""))


def unit_source(spec):
    """A ``etl.geology.UnitSource`` from a command-line value: a synthetic world's directory or its
    ``units.tif`` (codes 0 highlands, 1 maria), or a CSV of USGS label points; None passes through."""
    if spec is None or isinstance(spec, (str, Path)) and not str(spec):
        return None
    from etl.geology import UnitLabelPoints, UnitRaster

    if not isinstance(spec, (str, Path)):
        return spec  # already a UnitSource
    path = Path(spec)
    if path.is_dir():
        return UnitRaster.synthetic(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        return UnitRaster.synthetic(path.parent) if path.name == "units.tif" else UnitRaster(
            path, {0: "highlands", 1: "maria"})
    if path.suffix.lower() == ".csv":
        return UnitLabelPoints.from_csv(path)
    raise ValueError(f"{spec}: units must be a synthetic world directory, a units GeoTIFF or a label-points CSV")


def context_source(units, parts, *, albedo=None, reference=None, min_diameter_km: float = 20.0,
                   assume_crs=None):
    """``units`` (a :class:`etl.geology.UnitSource`, a :func:`unit_source` value, or None) plus the
    relative-age evidence ``parts`` of ``ATTRIBUTES.CONTEXT`` (:func:`age_net.config.context_parts`) as an
    :class:`etl.superposition.CraterContext`; no parts: the unit source unchanged.

    ``albedo``: the raster the "rays" part reads (the caller passes the DOM when no other is given);
    ``reference``: a crater table (path or DataFrame with lon, lat, diameter_km) the "superposition"
    part measures against besides the craters themselves (None: the craters alone). Raises ValueError
    when a part's input is missing, naming the option that gives it."""
    from age_net.config import context_parts

    units = unit_source(units)
    parts = context_parts(parts)
    if not parts:
        return units
    from etl.superposition import LUNAR_BASINS, CraterContext

    if "rays" in parts and not albedo:
        raise ValueError("ATTRIBUTES.CONTEXT has 'rays': it needs an albedo raster (give --albedo, or --dom)")
    if "rays" in parts and not Path(albedo).exists():
        raise ValueError(f"ATTRIBUTES.CONTEXT 'rays': albedo raster {albedo}: no such file")
    name = ""
    if reference is not None and "superposition" in parts:
        if isinstance(reference, (str, Path)):
            name = Path(reference).name
            from age_net.engine import _read_craters

            reference = _read_craters(reference)
        missing = {"lon", "lat", "diameter_km"} - set(reference.columns)
        if missing:
            raise ValueError(f"context crater table {name or ''}: no column(s) {sorted(missing)}")
    else:
        reference = None
    return CraterContext(units, superposition="superposition" in parts,
                         basins=LUNAR_BASINS if "basins" in parts else (),
                         albedo=albedo if "rays" in parts else None, min_diameter_km=float(min_diameter_km),
                         assume_crs=assume_crs, reference=reference, reference_name=name)


# --------------------------------------------------------------------------- normalisation


@dataclass
class InputStats:
    """Normalisation fitted on training craters; saved in every checkpoint."""

    dom_mean: float
    dom_std: float
    attr_mean: np.ndarray   # (A,)
    attr_std: np.ndarray    # (A,)

    def to_dict(self) -> dict:
        return dict(dom_mean=self.dom_mean, dom_std=self.dom_std, attr_mean=self.attr_mean.tolist(),
                    attr_std=self.attr_std.tolist())

    @classmethod
    def from_dict(cls, d: dict) -> "InputStats":
        return cls(float(d["dom_mean"]), float(d["dom_std"]), np.asarray(d["attr_mean"], dtype=np.float64),
                   np.asarray(d["attr_std"], dtype=np.float64))


def fit_input_stats(cs: CraterSet, idx) -> InputStats:
    """DOM mean/std over the valid pixels and attribute mean/std over the craters ``idx``."""
    idx = np.asarray(idx)
    dom_mean, dom_std = 0.0, 1.0
    if cs.dom is not None and len(idx):
        vals = cs.dom[idx]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            dom_mean, dom_std = float(vals.mean()), float(vals.std())
    a = cs.attributes.to_numpy(dtype=np.float64)[idx] if len(idx) else np.zeros((0, cs.attributes.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: handled below
        mean = np.nanmean(a, axis=0) if len(a) else np.zeros(a.shape[1])
        std = np.nanstd(a, axis=0) if len(a) else np.ones(a.shape[1])
    mean = np.where(np.isfinite(mean), mean, 0.0)
    # A constant (or never measured) attribute gets std 1: it standardises to 0, not to inf.
    std = np.where(np.isfinite(std) & (std > 1e-12), std, 1.0)
    return InputStats(dom_mean, max(dom_std, 1e-6), mean, std)


def image_array(cs: CraterSet, stats: InputStats, channels, dem_scale_m: float, ring_inner_radii: float,
                idx=None) -> np.ndarray:
    """(N, C, S, S) float32 network input in the order of ``channels`` ("dom", "dem"); NaN -> 0."""
    idx = np.arange(len(cs)) if idx is None else np.asarray(idx)
    out = []
    for ch in channels:
        if ch == "dom":
            if cs.dom is None:
                raise ValueError("the model needs a DOM channel but the craters were cropped without a DOM")
            x = (cs.dom[idx] - stats.dom_mean) / stats.dom_std
        elif ch == "dem":
            if cs.dem_m is None:
                raise ValueError("the model needs a DEM channel but the craters were cropped without a DEM")
            x = normalise_dem(cs.dem_m[idx], cs.size_px, cs.side_diameters, dem_scale_m, ring_inner_radii)
        else:
            raise ValueError(f"unknown image channel {ch!r}")
        out.append(np.nan_to_num(x.astype(np.float32), nan=0.0))
    return np.stack(out, axis=1) if out else np.zeros((len(idx), 0, cs.size_px, cs.size_px), np.float32)


def normalise_dem(dem_m: np.ndarray, size_px: int, side_diameters: float, scale_m: float,
                  ring_inner_radii: float) -> np.ndarray:
    """(elevation - median of the ring beyond ``ring_inner_radii`` radii) / ``scale_m`` per crop."""
    offsets = np.arange(size_px) + 0.5 - size_px / 2.0
    r = np.hypot(offsets[None, :], offsets[:, None]) / (size_px / (2.0 * side_diameters))
    ring = r > ring_inner_radii
    if not ring.any():
        raise ValueError(f"no crop pixel lies beyond {ring_inner_radii} radii (side = {side_diameters} diameters)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN ring: reference 0 below (invalid crop)
        ref = np.nanmedian(dem_m[:, ring], axis=1)
    ref = np.where(np.isfinite(ref), ref, 0.0)
    return (dem_m - ref[:, None, None].astype(np.float32)) / np.float32(scale_m)


def attribute_matrix(cs: CraterSet, stats: InputStats, idx=None) -> np.ndarray:
    """(N, 2A) float32: standardised values (NaN -> 0, clipped) then the 0/1 missing mask."""
    idx = np.arange(len(cs)) if idx is None else np.asarray(idx)
    a = cs.attributes.to_numpy(dtype=np.float64)[idx]
    if a.shape[1] != len(stats.attr_mean):
        raise ValueError(f"{a.shape[1]} attributes, normalisation fitted on {len(stats.attr_mean)}")
    missing = ~np.isfinite(a)
    z = np.clip((a - stats.attr_mean) / stats.attr_std, -ATTRIBUTE_CLIP, ATTRIBUTE_CLIP)
    z[missing] = 0.0
    return np.concatenate([z, missing.astype(np.float64)], axis=1).astype(np.float32)


# --------------------------------------------------------------------------- augmentation


def augment(image: torch.Tensor, attributes: torch.Tensor, cfg, channels, generator: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """One noisy view of one crater: (C, S, S) image, (2A,) attributes -> new tensors.

    Rotation by k x 90 degrees and a flip (exact, no interpolation): a crater's age does not
    depend on its orientation. DOM illumination jitter (gain, offset, pixel noise), small DEM
    and attribute noise. Missing attributes stay 0 (the mask half is never perturbed)."""
    g = generator
    if image.numel():
        if cfg.INPUT.ROT90:
            k = int(torch.randint(4, (1,), generator=g))
            if k:
                image = torch.rot90(image, k, dims=(1, 2))
        if cfg.INPUT.FLIP and float(torch.rand((), generator=g)) < 0.5:
            image = torch.flip(image, dims=(2,))
        image = image.clone()
        for c, name in enumerate(channels):
            if name == "dom":
                gain = float(torch.empty(()).uniform_(-cfg.INPUT.DOM_GAIN_JITTER, cfg.INPUT.DOM_GAIN_JITTER,
                                                      generator=g).exp()) if cfg.INPUT.DOM_GAIN_JITTER > 0 else 1.0
                offset = float(torch.empty(()).uniform_(-cfg.INPUT.DOM_OFFSET_JITTER, cfg.INPUT.DOM_OFFSET_JITTER,
                                                        generator=g)) if cfg.INPUT.DOM_OFFSET_JITTER > 0 else 0.0
                image[c] = image[c] * gain + offset
                if cfg.INPUT.DOM_NOISE_STD > 0:
                    image[c] += cfg.INPUT.DOM_NOISE_STD * torch.randn(image[c].shape, generator=g)
            elif name == "dem" and cfg.INPUT.DEM_NOISE_STD > 0:
                image[c] += cfg.INPUT.DEM_NOISE_STD * torch.randn(image[c].shape, generator=g)
    if attributes.numel() and cfg.INPUT.ATTRIBUTE_NOISE_STD > 0:
        a = attributes.numel() // 2
        noise = cfg.INPUT.ATTRIBUTE_NOISE_STD * torch.randn(a, generator=g) * (1.0 - attributes[a:])
        attributes = torch.cat([attributes[:a] + noise, attributes[a:]])
    return image, attributes


class AgeCropDataset(Dataset):
    """Craters ``idx`` of a crater set as network inputs.

    Items are dicts: ``image`` (C, S, S), ``attributes`` (2A,), ``label`` (int, -1 unlabelled),
    ``index`` (row in the crater set); with ``views=2`` also ``image2``/``attributes2``, a second
    independently augmented view (Mean Teacher's student and teacher inputs). ``augment=False``
    returns the crops as they are (evaluation)."""

    def __init__(self, cs: CraterSet, stats: InputStats, cfg, idx=None, *, augment: bool = False, views: int = 1,
                 seed: int = 0):
        self.idx = np.arange(len(cs)) if idx is None else np.asarray(idx, dtype=np.int64)
        self.channels = list(cfg.MODEL.IMAGE_CHANNELS) if cfg.MODEL.MODE != "attributes" else []
        self.images = torch.from_numpy(image_array(cs, stats, self.channels, cfg.INPUT.DEM_SCALE_M,
                                                   cfg.INPUT.DEM_RING_INNER_RADII, self.idx))
        self.attributes = torch.from_numpy(attribute_matrix(cs, stats, self.idx))
        self.labels = torch.from_numpy(cs.labels[self.idx].astype(np.int64))
        self.cfg = cfg
        self.augment = augment
        self.views = views
        self.generator = torch.Generator().manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, i: int) -> dict:
        img, att = self.images[i], self.attributes[i]
        item = {"label": self.labels[i], "index": int(self.idx[i])}
        if not self.augment:
            item.update(image=img, attributes=att)
            return item
        item["image"], item["attributes"] = augment(img, att, self.cfg, self.channels, self.generator)
        if self.views == 2:
            item["image2"], item["attributes2"] = augment(img, att, self.cfg, self.channels, self.generator)
        return item
