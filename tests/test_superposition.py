"""Relative-age evidence (etl.superposition): superposed-crater counts and densities on a constructed
catalogue, the basin-ejecta flag, bright rays on an albedo map, and the composition with a unit source."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from etl.age_classes import AgeClass
from etl.attributes import crater_attributes
from etl.crops import extract_crops
from etl.geology import UnitLabelPoints
from etl.moon import MOON_CRS, MOON_RADIUS_M
from etl.superposition import (BASIN_EJECTA_RADII, Basin, CraterContext, basin_attributes, ray_attributes,
                               superposition_attributes)

KM_PER_DEG = 2.0 * math.pi * MOON_RADIUS_M / 1000.0 / 360.0


def _north_km(km: float) -> float:
    """Degrees of latitude for a distance north along the meridian (exact on the sphere)."""
    return km / KM_PER_DEG


def _catalogue() -> pd.DataFrame:
    """A 100 km crater at (0, 0) with, by construction: three 20 km craters on its floor, two
    on its ejecta (75 km out), one 20 km crater on its rim (52 km out), a 60 km crater on its
    floor (more than half its size: no superposed evidence), and a 400 km host whose centre lies
    140 km south (so the 100 km crater sits inside it, on its floor, clear of its rim)."""
    rows = [(0.0, 0.0, 100.0)]
    rows += [(0.0, _north_km(k), 20.0) for k in (10.0, 20.0, 30.0)]           # floor (within 50 km)
    rows += [(0.0, -_north_km(75.0), 20.0), (_north_km(75.0), 0.0, 20.0)]    # ejecta, 75 km (1.5 R)
    rows += [(-_north_km(52.0), 0.0, 20.0)]                                   # on the rim
    rows += [(_north_km(15.0), -_north_km(15.0), 60.0)]                       # too large to be superposed
    rows += [(0.0, -_north_km(140.0), 400.0)]                                 # the host
    return pd.DataFrame(rows, columns=["lon", "lat", "diameter_km"])


def test_superposed_counts_on_a_constructed_catalogue():
    table = _catalogue()
    sup, units = superposition_attributes(table)
    assert len(units) == sup.shape[1] and all(c.startswith("strat_sup_") for c in sup.columns)
    row = sup.iloc[0]
    # Floor: the three 20 km craters (the on-rim one, centred just past R, counts as ejecta (R <= d < 2 R);
    # the 60 km crater is more than half the diameter).
    assert row["strat_sup_floor_count"] == 3
    assert row["strat_sup_ejecta_count"] == 3
    # Density: six craters >= 20 km over the 2-radius (100 km) cap.
    cap_km2 = 2 * math.pi * (MOON_RADIUS_M / 1000) ** 2 * (1 - math.cos(100.0 / (MOON_RADIUS_M / 1000)))
    assert row["strat_sup_density_per_1e6km2"] == pytest.approx(6 / cap_km2 * 1e6)
    # Rim crossings by smaller craters: the on-rim 20 km crater and the 60 km crater (21 km from the
    # centre, radius 30 km: its rim reaches past the 50 km rim); not the floor or ejecta ones.
    assert row["strat_sup_rim_cut_count"] == 2
    # It lies inside the 400 km host (140 km from its centre, radius 200 km): younger than it.
    assert row["strat_sup_host_count"] == 1
    assert row["strat_sup_log10_host_ratio"] == pytest.approx(math.log10(4.0))
    assert row["strat_sup_on_larger_rim_count"] == 0
    # The on-rim 20 km crater sits on the 100 km crater's rim (and inside the host).
    on_rim = sup.iloc[6]
    assert on_rim["strat_sup_on_larger_rim_count"] == 1 and on_rim["strat_sup_floor_count"] == 0
    # Terrain density: every other crater >= 20 km within 200 km (all eight, the host's centre at 140 km).
    terrain_km2 = 2 * math.pi * (MOON_RADIUS_M / 1000) ** 2 * (1 - math.cos(200.0 / (MOON_RADIUS_M / 1000)))
    assert row["strat_sup_terrain_density_per_1e6km2"] == pytest.approx(8 / terrain_km2 * 1e6)
    # The completeness limit: above 20 km nothing on the floor is counted in the density.
    dense = superposition_attributes(table, min_diameter_km=30.0)[0].iloc[0]
    assert dense["strat_sup_density_per_1e6km2"] == 0.0 and dense["strat_sup_floor_count"] == 3


def test_a_crater_inside_a_basins_ejecta_ring_gets_the_flag():
    basin = Basin("Test", 0.0, 0.0, 600.0, AgeClass.IMBRIAN)
    old = Basin("Old", 90.0, 0.0, 600.0, AgeClass.PRE_NECTARIAN)
    radius_km = 300.0
    table = pd.DataFrame({"lon": [0.0, 0.0, 0.0, 0.0], "lat": [_north_km(2.0 * radius_km), _north_km(4.0 * radius_km),
                                                               _north_km(1.0 * radius_km), 0.0],
                          "diameter_km": [30.0, 30.0, 500.0, 30.0]})
    out, units = basin_attributes(table, (basin, old))
    assert len(units) == out.shape[1]
    ic, pnc = "strat_basin_Ic", "strat_basin_pNc"
    # 2 radii out: on the ejecta; 4 radii: not; 1 radius but 500 km across: too large to be its ejecta.
    assert out.loc[0, f"{ic}_distance_radii"] == pytest.approx(2.0, rel=1e-6) and out.loc[0, f"{ic}_ejecta"] == 1.0
    assert out.loc[1, f"{ic}_distance_radii"] == pytest.approx(4.0, rel=1e-6) and out.loc[1, f"{ic}_ejecta"] == 0.0
    assert out.loc[2, f"{ic}_distance_radii"] == 6.0 and out.loc[2, f"{ic}_ejecta"] == 0.0
    assert out.loc[3, f"{ic}_distance_radii"] == pytest.approx(0.0, abs=1e-6)
    # The far (90 degrees) pre-Nectarian basin: clipped at 6 radii, no flag; no Nectarian basin given.
    assert (out[f"{pnc}_distance_radii"] == 6.0).all() and (out[f"{pnc}_ejecta"] == 0.0).all()
    assert "strat_basin_Nc_distance_radii" not in out.columns
    assert BASIN_EJECTA_RADII > 2.0


def _albedo(tmp_path, rayed_lonlat, plain_lonlat, radius_km):
    """A geographic albedo map at 0.05 deg/px: level 100 with one crater (interior 130) whose 1-4
    radius annulus is bright (150) along 8 radial rays 22.5 degrees wide (centred on 15-degree sectors), and a
    plain one."""
    step = 0.05
    lon = np.arange(-10, 10, step) + step / 2
    lat = np.arange(10, -10, -step) - step / 2
    glon, glat = np.meshgrid(lon, lat)
    img = np.full(glon.shape, 100.0, np.float32)
    x_km = (glon - rayed_lonlat[0]) * KM_PER_DEG * np.cos(np.radians(glat))
    y_km = (glat - rayed_lonlat[1]) * KM_PER_DEG
    r = np.hypot(x_km, y_km) / radius_km
    az = np.arctan2(x_km, y_km)
    ray = (np.cos(8 * (az - np.radians(7.5))) > 0.0) & (r > 1.0) & (r < 4.0)
    img[ray] = 150.0
    img[r <= 1.0] = 130.0
    path = tmp_path / "albedo.tif"
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[1], height=img.shape[0], count=1, dtype="float32",
                       crs=rasterio.crs.CRS.from_user_input(MOON_CRS), nodata=0,
                       transform=Affine(step, 0, -10, 0, -step, 10)) as ds:
        ds.write(img, 1)
    return path


def test_rays_are_brighter_than_the_far_field_and_azimuthally_contrasted(tmp_path):
    radius_km = 10.0
    path = _albedo(tmp_path, (0.0, 0.0), (-6.0, 6.0), radius_km)
    table = pd.DataFrame({"lon": [0.0, -6.0], "lat": [0.0, 6.0], "diameter_km": [2 * radius_km, 2 * radius_km]})
    out, units = ray_attributes(table, path)
    assert len(units) == out.shape[1]
    rayed, plain = out.iloc[0], out.iloc[1]
    assert rayed["strat_ray_ratio_0_0.9"] == pytest.approx(1.3, abs=0.02)
    # Half the azimuths are rays: a third of the 24 sectors are wholly bright (150 against 100), the others
    # a quarter bright; 4 km crop pixels blur the narrow rays near the rim, so the contrast is below
    # the ideal 0.24 but far above a plain crater's 0.
    assert 0.1 < rayed["strat_ray_azimuthal_contrast"] < 0.3
    assert rayed["strat_ray_bright_frac"] > 0.2
    for name in ("strat_ray_ratio_1_2", "strat_ray_ratio_2_4", "strat_ray_ratio_4_6"):
        assert plain[name] == pytest.approx(1.0, abs=1e-6)
    assert plain["strat_ray_bright_frac"] == 0.0 and plain["strat_ray_azimuthal_contrast"] == pytest.approx(0.0)
    # Rays end at 4 radii: the 4-6 annulus is the background.
    assert rayed["strat_ray_ratio_4_6"] == pytest.approx(1.0, abs=1e-6)


def test_context_adds_to_a_unit_source_and_ignores_crater_materials(tmp_path):
    table = _catalogue()
    path = _albedo(tmp_path, (0.0, 0.0), (-6.0, 6.0), 50.0)
    points = pd.DataFrame({"unit": ["Cc", "Im"], "unit_name": ["Crater Material", "Mare Material"],
                           "group": ["Crater Materials", "Mare and Other Materials"],
                           "epoch": ["Copernican System", "Imbrian System"],
                           "lon": [0.0, 0.0], "lat": [0.0, _north_km(120.0)]})
    context = CraterContext(UnitLabelPoints(points), albedo=path)
    assert "superposition=True" in context.describe() and "albedo.tif" in context.describe()
    crops = extract_crops(table.iloc[:1], dom_path=path)
    on, schema_on = crater_attributes(table.iloc[:1], crops, units=context, crater_material_units=True)
    off, schema_off = crater_attributes(table.iloc[:1], crops, units=context, crater_material_units=False)
    new = [n for n in schema_off.names if n.startswith(("strat_sup_", "strat_basin_", "strat_ray_"))]
    assert {n.split("_")[1] for n in new} == {"sup", "basin", "ray"}
    assert "strat_crater_rim_Cc" in schema_on.names and "strat_crater_rim_Cc" not in schema_off.names
    # The new evidence does not depend on the crater-material switch (it never reads the map units).
    pd.testing.assert_frame_equal(on[new], off[new])
    # Given a one-row table, the superposition counts see no neighbours.
    assert off.loc[0, "strat_sup_floor_count"] == 0
    bare = CraterContext(None, superposition=False, basins=())
    frame, units = bare.attributes(table)
    assert frame.shape == (len(table), 0) and units == []
