#!/usr/bin/env python
"""How well can ANY classifier date a synthetic world's craters from their degradation?

An upper-bound check for the age network: a leave-one-out 8-nearest-neighbour vote on the
world's own *true* values (no measurement noise): log diameter, the fraction of the fresh
depth the crater kept (``depth_kept_frac``, the degradation state), and the unit (maria are
younger than 3.5 Ga). In a world degraded linearly in age (``--degradation-law linear``) the
Nectarian spans 70 Myr of a 4.4 Gyr diffusion history, so the old classes overlap in degradation
even when it is known exactly; with the flux law (the default) the heavy bombardment spreads them.

    python benchmarks/age_label_ceiling.py /tmp/agew0/catalogue.csv
"""
import sys

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

cat = pd.read_csv(sys.argv[1])
y = cat["age_class"].map({"pNc": 0, "Nc": 1, "Ic": 2, "Ec": 3, "Cc": 4}).to_numpy()
# Scaled so that the unit always decides first and kept depth weighs more than size.
x = np.c_[np.log(cat["diameter_km"]), 5 * cat["depth_kept_frac"], 10 * (cat["unit"] == "maria")]
_, nn = cKDTree(x).query(x, k=9)
pred = np.array([np.bincount(y[row[1:]], minlength=5).argmax() for row in nn])
print(f"{len(cat)} craters: accuracy of the 8-NN vote on true degradation, size and unit = {np.mean(pred == y):.3f}")
