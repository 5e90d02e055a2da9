"""``deepcraters synth``: write a synthetic lunar study area."""
from __future__ import annotations

import argparse
import time

from etl.chronology import DEGRADATION_LAWS
from etl.synthetic import LAW_DEFAULTS, WorldParams

_DEFAULTS = WorldParams()


def _law_defaults(name: str) -> str:
    return ", ".join(f"{law} {values[name]:g}" for law, values in LAW_DEFAULTS.items())


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="deepcraters synth",
        description=(
            "Generate a seeded, reproducible synthetic lunar study area and write it to OUT: dom.tif (uint8 "
            "orthophoto: hillshade x albedo), dem.tif (float32 elevation, m), units.tif (0 highlands, 1 maria), "
            "all simple cylindrical on the Moon sphere; catalogue.csv (the visible craters: crater_id, lon, lat, "
            "diameter_km, age_ga, age_class, unit, depth_m, ...), craters_all.csv (every crater stamped) and "
            "world.json (every parameter, the CRS and the code version). Craters follow a power-law size-"
            "frequency distribution, carry Pike (1977) profiles and are degraded by topographic diffusion over "
            "their flux-weighted age (Neukum 2001 chronology; --degradation-law linear: in proportion to their "
            "age, the world of earlier releases); craters on maria are younger than the maria."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (created)")
    ap.add_argument("--size", type=int, default=_DEFAULTS.size_px, help="width in pixels")
    ap.add_argument("--height", type=int, default=None, help="height in pixels (default: = width)")
    ap.add_argument("--pixel-size-m", type=float, default=_DEFAULTS.pixel_size_m, help="map pixel size, metres")
    ap.add_argument("--center-lon", type=float, default=_DEFAULTS.center_lon_deg, help="centre longitude, degrees")
    ap.add_argument("--center-lat", type=float, default=_DEFAULTS.center_lat_deg, help="centre latitude, degrees")
    ap.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (same seed, same files)")
    ap.add_argument("--n-craters", type=int, default=None,
                    help="number of craters (default: --density x area)")
    ap.add_argument("--density", type=float, default=None,
                    help="craters at least --min-diameter-px wide per million pixels (default: per degradation "
                         f"law, {_law_defaults('crater_density_per_mpx')})")
    ap.add_argument("--min-diameter-px", type=float, default=_DEFAULTS.min_diameter_px,
                    help="smallest crater diameter, pixels")
    ap.add_argument("--max-diameter-px", type=float, default=None,
                    help="largest crater diameter, pixels (default: a quarter of the smaller side)")
    ap.add_argument("--sfd-slope", type=float, default=_DEFAULTS.sfd_slope,
                    help="cumulative size-frequency slope b in N(>D) ~ D^-b")
    ap.add_argument("--mare-fraction", type=float, default=_DEFAULTS.mare_fraction, help="share of area that is maria")
    ap.add_argument("--mare-age-ga", type=float, default=_DEFAULTS.mare_age_ga,
                    help="age of the mare surface, Ga (3.2-4.4: craters on maria are younger)")
    ap.add_argument("--diffusivity", type=float, default=None,
                    help="today's topographic diffusivity kappa, m^2/Myr (default: per degradation law, "
                         f"{_law_defaults('diffusivity_m2_per_myr')})")
    ap.add_argument("--degradation-law", choices=DEGRADATION_LAWS, default=_DEFAULTS.degradation_law,
                    help="flux: diffusion over the flux-weighted time of the Neukum (2001) chronology, so "
                         "pre-Nectarian craters are far more degraded than Imbrian ones; linear: diffusion in "
                         "proportion to age (the world of earlier releases, with its defaults)")
    ap.add_argument("--sun-azimuth", type=float, default=_DEFAULTS.sun_azimuth_deg,
                    help="sun azimuth, degrees clockwise from north")
    ap.add_argument("--sun-elevation", type=float, default=_DEFAULTS.sun_elevation_deg,
                    help="sun elevation above the horizon, degrees")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    from etl.synthetic import generate_world

    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    summary = generate_world(
        args.out, progress=not args.quiet, size_px=args.size, height_px=args.height,
        pixel_size_m=args.pixel_size_m, center_lon_deg=args.center_lon, center_lat_deg=args.center_lat,
        seed=args.seed, n_craters=args.n_craters, crater_density_per_mpx=args.density,
        min_diameter_px=args.min_diameter_px, max_diameter_px=args.max_diameter_px, sfd_slope=args.sfd_slope,
        mare_fraction=args.mare_fraction, mare_age_ga=args.mare_age_ga, diffusivity_m2_per_myr=args.diffusivity,
        degradation_law=args.degradation_law, sun_azimuth_deg=args.sun_azimuth, sun_elevation_deg=args.sun_elevation)
    width, height = summary.size_px
    by_class = ", ".join(f"{k} {v}" for k, v in summary.counts_by_age_class.items())
    print(f"wrote {summary.out_dir}: {width} x {height} px at {summary.pixel_size_m:g} m/px, "
          f"{summary.n_craters_catalogued} catalogued craters ({by_class}) of {summary.n_craters_stamped} stamped, "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
