"""The lunar impact chronology: how many craters formed since a time, and the flux-weighted time a
surface or crater has been exposed to impacts. One owner for the chronology function.

Neukum, Ivanov & Hartmann (2001): the cumulative number of craters >= 1 km per km^2 that a surface
of age t (Ga) carries is

    N(1)(t) = 5.44e-14 (exp(6.93 t) - 1) + 8.38e-4 t

so the impact flux dN(1)/dt was orders of magnitude higher before ~3.8 Ga than today. Fassett &
Thomson (2014) tie the topographic diffusivity of the lunar surface to that flux (impacts do the
degrading), so the diffusion a crater has suffered is the present diffusivity times its
*effective* (flux-weighted) time: N(1)(t) divided by today's flux, in Ga of today's flux.
"""
from __future__ import annotations

import numpy as np

#: Neukum et al. (2001) chronology coefficients: N(1)(t) = A (exp(B t) - 1) + C t, per km^2, t in Ga.
NEUKUM_A_PER_KM2 = 5.44e-14
NEUKUM_B_PER_GA = 6.93
NEUKUM_C_PER_KM2_PER_GA = 8.38e-4

#: Degradation laws of the synthetic world: "flux" (diffusion follows the cumulative impact flux) or
#: "linear" (diffusion proportional to age; the world of earlier releases).
DEGRADATION_LAWS = ("flux", "linear")


def neukum_n1_per_km2(age_ga) -> np.ndarray:
    """Cumulative density of craters >= 1 km (per km^2) on a surface ``age_ga`` old (Neukum et al. 2001)."""
    t = np.asarray(age_ga, dtype=float)
    return NEUKUM_A_PER_KM2 * np.expm1(NEUKUM_B_PER_GA * t) + NEUKUM_C_PER_KM2_PER_GA * t


def present_flux_n1_per_km2_per_ga() -> float:
    """Today's production rate dN(1)/dt at t = 0, craters >= 1 km per km^2 per Ga."""
    return NEUKUM_A_PER_KM2 * NEUKUM_B_PER_GA + NEUKUM_C_PER_KM2_PER_GA


def effective_time_ga(age_ga, law: str = "flux") -> np.ndarray:
    """Time a surface ``age_ga`` old has been degraded for, in Ga at today's rate.

    ``flux``: N(1)(age) / today's flux (1.1 Ga -> 1.1, 3.2 Ga -> 3.5, 3.85 Ga -> 29, 3.92 Ga -> 45,
    4.4 Ga -> 1139); ``linear``: the age itself. Monotonic, 0 at 0, about the age for the last 3 Ga.
    """
    if law == "flux":
        return neukum_n1_per_km2(age_ga) / present_flux_n1_per_km2_per_ga()
    if law == "linear":
        return np.asarray(age_ga, dtype=float)
    raise ValueError(f"unknown degradation law {law!r}; expected one of {DEGRADATION_LAWS}")


__all__ = ["DEGRADATION_LAWS", "effective_time_ga", "neukum_n1_per_km2", "present_flux_n1_per_km2_per_ga"]
