#!/usr/bin/env python
"""How well can ANY classifier date a synthetic world's craters from their degradation?

An upper-bound check for the age network: a leave-one-out 8-nearest-neighbour vote on the
world's own *true* values (no measurement noise):

* log diameter, the fraction of the fresh depth the crater kept (``depth_kept_frac``, the
  degradation state) and the unit (maria are younger than 3.5 Ga);
* the diffusion length sigma (``diffusion_length_m``; sigma^2 = 2 kappa tau(age), so it is the
  age scale itself, whatever the diameter) and the unit.

In a world degraded linearly in age (``--degradation-law linear``) the Nectarian spans 70 Myr of
a 4.4 Gyr diffusion history, so the old classes overlap in degradation even when it is known
exactly; with the flux law (the default) the heavy bombardment spreads them.

With ``--measured`` the same votes are taken on what ``etl.attributes`` measures on the world's
DEM (``depth_over_fresh`` for the kept fraction, ``diffusion_length_m`` for sigma; crops of
``--size`` px, 3 diameters; and ``native_diffusion_length_m``, sigma fitted on the DEM's own
pixels): the gap between the two is what measurement loses.

    python benchmarks/age_label_ceiling.py /tmp/agew0/catalogue.csv [--measured]
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = {"pNc": 0, "Nc": 1, "Ic": 2, "Ec": 3, "Cc": 4}


def vote(x: np.ndarray, y: np.ndarray) -> float:
    _, nn = cKDTree(x).query(x, k=9)
    pred = np.array([np.bincount(y[row[1:]], minlength=5).argmax() for row in nn])
    return float(np.mean(pred == y))


def features(diameter_km, kept_frac, sigma_m, maria):
    # Scaled so that the unit always decides first and kept depth weighs more than size.
    return {"kept depth, size, unit": np.c_[np.log(diameter_km), 5 * kept_frac, 10 * maria],
            "diffusion length, unit": np.c_[np.log(sigma_m + 5.0), 10 * maria]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("catalogue", type=Path, help="a synthetic world's catalogue.csv (dem.tif beside it)")
    p.add_argument("--measured", action="store_true", help="also vote on the attributes measured on the DEM")
    p.add_argument("--size", type=int, default=64, help="attribute crop size, px (default 64)")
    args = p.parse_args()
    cat = pd.read_csv(args.catalogue)
    y = cat["age_class"].map(CLASSES).to_numpy()
    maria = (cat["unit"] == "maria").to_numpy()
    d = cat["diameter_km"].to_numpy()
    truth = features(d, cat["depth_kept_frac"].to_numpy(), cat["diffusion_length_m"].to_numpy(), maria)
    rows = [(f"true {name}", len(cat), vote(x, y)) for name, x in truth.items()]
    if args.measured:
        from etl.attributes import crater_attributes
        from etl.crops import CropSettings, extract_crops, native_windows

        dem = args.catalogue.parent / "dem.tif"
        crops = extract_crops(cat, dem_path=dem, settings=CropSettings(size_px=args.size))
        attrs, _ = crater_attributes(cat, crops, native_dem=native_windows(dem, cat))
        ok = (np.asarray(crops.valid, bool) & np.isfinite(attrs["depth_over_fresh"].to_numpy())
              & np.isfinite(attrs["diffusion_length_m"].to_numpy()))
        for name, x in truth.items():
            rows.append((f"true {name} (measurable craters)", int(ok.sum()), vote(x[ok], y[ok])))
        measured = features(d, attrs["depth_over_fresh"].to_numpy(), attrs["diffusion_length_m"].to_numpy(), maria)
        for name, x in measured.items():
            rows.append((f"measured {name}", int(ok.sum()), vote(x[ok], y[ok])))
        native = attrs["native_diffusion_length_m"].to_numpy()
        x = features(d, attrs["depth_over_fresh"].to_numpy(), native, maria)["diffusion length, unit"]
        nok = ok & np.isfinite(native)
        rows.append(("true diffusion length, unit (craters the native fit measures)", int(nok.sum()),
                     vote(truth["diffusion length, unit"][nok], y[nok])))
        rows.append(("measured diffusion length on the DEM's own pixels (native fit), unit",
                     int(nok.sum()), vote(x[nok], y[nok])))
        err = np.log(native + 5.0) - np.log(cat["diffusion_length_m"].to_numpy() + 5.0)
        crop_err = np.log(attrs["diffusion_length_m"].to_numpy() + 5.0) - np.log(cat["diffusion_length_m"].to_numpy() + 5.0)
        for name, e in (("crop fit", crop_err), ("native fit", err)):
            e = e[ok & np.isfinite(e)]
            print(f"log(sigma + 5 m) error of the {name}: median {np.median(e):+.3f}, "
                  f"MAD {1.4826 * np.median(np.abs(e - np.median(e))):.3f}")
    for name, n, acc in rows:
        print(f"{n} craters: accuracy of the 8-NN vote on {name} = {acc:.3f}")


if __name__ == "__main__":
    main()
