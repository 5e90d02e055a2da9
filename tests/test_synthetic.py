"""The synthetic lunar world: files, CRS, physics (profiles, degradation, ages vs units), reproducibility."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from scipy.stats import spearmanr

from etl.age_classes import AgeClass
from etl.geometry import PixelGrid, check_lunar_crs
from etl.moon import MOON_RADIUS_M
from etl.synthetic import (UNIT_MARIA, WorldParams, crater_shape_km, generate_world, load_world_params,
                           synthesize_world)

# A few hundred craters on a small world: enough for statistics, fast enough for a laptop. Classes drawn
# evenly (the default world draws half of its craters pre-Nectarian, and most of those are erased), so
# that every class, young highland craters included, has enough craters for the statistics.
WORLD = dict(size_px=512, pixel_size_m=100.0, center_lon_deg=20.0, center_lat_deg=-10.0, seed=7,
             crater_density_per_mpx=1100.0, age_class_weights=(0.2, 0.2, 0.2, 0.2, 0.2))


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_world(out, **WORLD)
    return out


@pytest.fixture(scope="module")
def world(world_dir):
    cat = pd.read_csv(world_dir / "catalogue.csv")
    with rasterio.open(world_dir / "dem.tif") as ds:
        dem = ds.read(1)
        grid = PixelGrid.from_dataset(ds)
    with rasterio.open(world_dir / "dom.tif") as ds:
        dom = ds.read(1)
    with rasterio.open(world_dir / "units.tif") as ds:
        units = ds.read(1)
    return {"cat": cat, "dem": dem, "dom": dom, "units": units, "grid": grid,
            "meta": json.loads((world_dir / "world.json").read_text())}


def _ring_stats(img, col, row, radius_px, cos_lat, inner, outer, reduce=np.median):
    """``reduce`` of ``img`` over the ring inner..outer radii around (col, row); ground-true distances."""
    rows, cols = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    d = np.hypot((cols + 0.5 - col) * cos_lat, rows + 0.5 - row) / radius_px
    sel = (d >= inner) & (d <= outer)
    return reduce(img[sel]) if sel.any() else np.nan


def _measured_depth_m(dem, crater, cos_lat):
    """Rim crest (median over 0.85-1.15 R) minus the lowest point within 0.25 R, metres."""
    r = crater.diameter_px / 2.0
    win = int(1.3 * r / cos_lat) + 2
    r0, c0 = max(int(crater.row_px) - win, 0), max(int(crater.col_px) - win, 0)
    sub = dem[r0:int(crater.row_px) + win, c0:int(crater.col_px) + win]
    col, row = crater.col_px - c0, crater.row_px - r0
    rim = _ring_stats(sub, col, row, r, cos_lat, 0.85, 1.15)
    centre = _ring_stats(sub, col, row, r, cos_lat, 0.0, 0.25, np.min)
    return rim - centre


def _interior(cat, shape, margin_radii=1.5):
    r = cat.diameter_px / 2.0 * margin_radii / np.cos(np.radians(cat.lat))
    return ((cat.col_px - r > 0) & (cat.col_px + r < shape[1]) & (cat.row_px - r > 0)
            & (cat.row_px + r < shape[0]))


def test_files_are_lunar_geotiffs_on_one_grid(world_dir, world):
    grids = []
    for name, dtype in (("dom.tif", "uint8"), ("dem.tif", "float32"), ("units.tif", "uint8")):
        with rasterio.open(world_dir / name) as ds:
            crs = check_lunar_crs(ds.crs, source=name)  # raises for a missing or Earth CRS
            assert ds.dtypes[0] == dtype
            assert ds.nodata is not None
            axis = ds.crs.to_dict().get("R") or ds.crs.to_dict().get("a")
            grids.append((crs.to_wkt(), tuple(ds.transform), ds.shape))
    assert len(set(grids)) == 1
    assert grids[0][2] == (WORLD["size_px"], WORLD["size_px"])
    # The grid is centred where asked, and 100 m map pixels span 100 m north-south on the sphere.
    lon, lat = world["grid"].pixel_to_lonlat(256.0, 256.0)
    assert float(lon) == pytest.approx(WORLD["center_lon_deg"], abs=1e-6)
    assert float(lat) == pytest.approx(WORLD["center_lat_deg"], abs=1e-6)
    _, lat_below = world["grid"].pixel_to_lonlat(256.0, 257.0)
    assert np.radians(float(lat - lat_below)) * MOON_RADIUS_M == pytest.approx(WORLD["pixel_size_m"], rel=1e-6)
    assert axis is None or axis == pytest.approx(MOON_RADIUS_M)
    assert set(np.unique(world["units"])) == {0, 1}
    assert world["dom"].min() >= 1  # 0 is nodata


def test_catalogue_columns_and_age_classes(world):
    cat = world["cat"]
    for col in ("crater_id", "lon", "lat", "diameter_km", "age_ga", "age_class", "unit", "depth_m"):
        assert col in cat.columns
    assert cat.crater_id.is_unique
    assert len(cat) > 200
    assert (cat.lon.between(-180, 180) & cat.lat.between(-90, 90)).all()
    assert [AgeClass.from_age_ga(a).code for a in cat.age_ga] == list(cat.age_class)
    assert set(cat.age_class) == {c.code for c in AgeClass}


def _untouched(cat, all_craters):
    """Craters that no younger crater reaches (its rim zone and theirs do not overlap)."""
    keep = []
    for c in cat.itertuples():
        younger = all_craters[all_craters.age_ga < c.age_ga]
        gap = np.hypot((younger.col_px - c.col_px) * np.cos(np.radians(c.lat)), younger.row_px - c.row_px)
        keep.append(bool((gap > 1.2 * (c.diameter_px + younger.diameter_px) / 2.0).all()))
    return np.array(keep, dtype=bool)


def test_catalogue_positions_are_where_the_craters_are(world_dir, world):
    cat, dem, grid = world["cat"], world["dem"], world["grid"]
    col, row = grid.lonlat_to_pixel(cat.lon.to_numpy(), cat.lat.to_numpy())
    np.testing.assert_allclose(col, cat.col_px, atol=1e-4)
    np.testing.assert_allclose(row, cat.row_px, atol=1e-4)
    fresh = cat[(cat.age_class == "Cc") & ~cat.complex & (cat.diameter_px >= 10) & _interior(cat, dem.shape)]
    fresh = fresh[_untouched(fresh, pd.read_csv(world_dir / "craters_all.csv"))]
    assert len(fresh) >= 10
    hits = 0
    for c in fresh.itertuples():
        cos_lat = np.cos(np.radians(c.lat))
        r = c.diameter_px / 2.0
        # Fresh craters: the rim stands well above the centre (d/D ~ 0.2 when fresh).
        assert _measured_depth_m(dem, c, cos_lat) > 0.08 * c.diameter_km * 1000.0
        # The lowest point of the crater, relative to the plane of its surroundings (craters sit on
        # older slopes), is at its catalogued centre.
        r0, c0 = int(c.row_px - 2 * r), int(c.col_px - 2 * r / cos_lat)
        sub = dem[r0:int(c.row_px + 2 * r) + 1, c0:int(c.col_px + 2 * r / cos_lat) + 1].astype(float)
        rows, cols = np.mgrid[0:sub.shape[0], 0:sub.shape[1]]
        dx, dy = (cols + c0 + 0.5 - c.col_px) * cos_lat, rows + r0 + 0.5 - c.row_px
        dist = np.hypot(dx, dy) / r
        ring = (dist > 1.3) & (dist < 2.0)
        design = np.column_stack([np.ones(ring.sum()), dx[ring], dy[ring]])
        coef = np.linalg.lstsq(design, sub[ring], rcond=None)[0]
        relief = np.where(dist <= 1.0, sub - (coef[0] + coef[1] * dx + coef[2] * dy), np.inf)
        hits += dist[np.unravel_index(np.argmin(relief), relief.shape)] <= 0.3
    assert hits >= 0.9 * len(fresh)


def test_older_craters_are_shallower(world):
    cat, dem = world["cat"], world["dem"]
    sel = cat[~cat.complex & (cat.diameter_px >= 12) & _interior(cat, dem.shape)]
    d_over_d = np.array([_measured_depth_m(dem, c, np.cos(np.radians(c.lat))) / (c.diameter_km * 1000.0)
                         for c in sel.itertuples()])
    assert len(sel) >= 60
    rho, p = spearmanr(sel.age_ga, d_over_d)
    assert rho < -0.3 and p < 1e-3
    by_class = pd.Series(d_over_d).groupby(sel.age_class.to_numpy()).mean()
    assert by_class["Cc"] > by_class["Ic"] + 0.02
    assert by_class["Ic"] > by_class["pNc"]
    assert 0.14 < by_class["Cc"] < 0.23  # fresh simple craters: d/D about 0.2


def test_maria_are_young_surfaces(world):
    cat, units, meta = world["cat"], world["units"], world["meta"]
    mare_age = meta["params"]["mare_age_ga"]
    on_maria = cat.unit == "maria"
    assert on_maria.sum() >= 20
    assert (cat.age_ga[on_maria] <= mare_age).all()
    assert (cat.age_class[on_maria].isin(["Ic", "Ec", "Cc"])).all()
    # Highlands keep every class, including ones older than the maria.
    assert (cat.age_ga[~on_maria] > mare_age).any()
    # The unit column is the unit map at the crater centre.
    at_centre = units[cat.row_px.astype(int), cat.col_px.astype(int)]
    assert ((at_centre == UNIT_MARIA) == on_maria).all()
    assert (units == UNIT_MARIA).mean() == pytest.approx(meta["params"]["mare_fraction"], abs=0.02)
    # Maria are darker than highlands in the orthophoto.
    assert np.median(world["dom"][units == UNIT_MARIA]) < 0.8 * np.median(world["dom"][units != UNIT_MARIA])


def test_fresh_craters_are_bright(world):
    cat, dom = world["cat"], world["dom"]
    sel = cat[(cat.diameter_px >= 10) & _interior(cat, dom.shape, 2.0) & (cat.unit == "highlands")]
    young = sel[sel.age_ga < 0.3]
    old = sel[sel.age_ga > 3.85]
    assert len(young) >= 3 and len(old) >= 3

    def ejecta_brightness(c):
        return _ring_stats(dom.astype(float), c.col_px, c.row_px, c.diameter_px / 2, np.cos(np.radians(c.lat)),
                           1.1, 1.8, np.mean)

    assert np.median([ejecta_brightness(c) for c in young.itertuples()]) > \
        1.2 * np.median([ejecta_brightness(c) for c in old.itertuples()])


def test_size_frequency_distribution_is_a_power_law(world_dir):
    allc = pd.read_csv(world_dir / "craters_all.csv")
    d_min = WORLD.get("min_diameter_px", WorldParams().min_diameter_px)
    d = allc.diameter_px.to_numpy()
    assert d.min() >= d_min - 1e-9
    # Maximum-likelihood slope of N(>D) ~ D^-b (Pareto); its standard error is b / sqrt(n) ~ 0.12 here.
    b = len(d) / np.log(d / d_min).sum()
    assert b == pytest.approx(2.0, abs=0.4)


def test_profiles_follow_pike():
    simple = crater_shape_km(np.array([1.0, 5.0, 10.0]))
    assert np.all(np.abs(simple["depth_km"] / np.array([1.0, 5.0, 10.0]) - 0.2) < 0.02)
    assert np.all(np.abs(simple["rim_height_km"] / np.array([1.0, 5.0, 10.0]) - 0.037) < 0.005)
    assert not simple["complex"].any()
    cx = crater_shape_km(np.array([30.0, 80.0]))
    assert cx["complex"].all()
    assert np.all(cx["depth_km"] / np.array([30.0, 80.0]) < 0.12)  # complex craters are shallower
    assert np.all(cx["floor_diameter_km"] > 0) and np.all(cx["peak_height_km"] > 0)


def test_same_seed_same_files_other_seed_other_world(tmp_path):
    small = dict(size_px=128, seed=11, crater_density_per_mpx=1500.0)
    a, b, c = (generate_world(tmp_path / name, **{**small, **extra})
               for name, extra in (("a", {}), ("b", {}), ("c", {"seed": 12})))
    for name in ("dom.tif", "dem.tif", "units.tif", "catalogue.csv", "world.json"):
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    for name in ("dom.tif", "dem.tif", "catalogue.csv"):
        assert (a.out_dir / name).read_bytes() != (c.out_dir / name).read_bytes(), name
    # world.json records how to make the world again.
    meta = json.loads((a.out_dir / "world.json").read_text())
    assert meta["params"]["seed"] == 11 and meta["code_version"] and "PROJCS" in meta["crs"] or "PROJCRS" in meta["crs"]
    params = load_world_params(a.world_json_path)
    again = synthesize_world(params)
    with rasterio.open(a.dem_path) as ds:
        np.testing.assert_array_equal(ds.read(1), again.dem_m)


def test_craters_are_scaled_by_latitude():
    """At 60 degrees latitude a simple cylindrical map stretches craters east-west by 1/cos(60) = 2."""
    for seed in range(20):  # the first world whose one crater lies wholly inside the map
        w = synthesize_world(size_px=160, center_lat_deg=60.0, n_craters=1, min_diameter_px=30.0,
                             max_diameter_px=30.0001, mare_fraction=0.0, terrain_rms_m=0.0, basin_depth_m=0.0,
                             age_class_weights=(0, 0, 0, 0, 1), seed=seed)  # a crisp (Copernican) crater
        if _interior(w.craters, w.dem_m.shape).all():
            break
    c = w.craters.iloc[0]
    dem = w.dem_m - np.median(w.dem_m)
    below = dem < -0.2 * c.depth_m  # the bowl's inner part
    rows, cols = np.nonzero(below)
    width, height = np.ptp(cols) + 1, np.ptp(rows) + 1
    assert width / height == pytest.approx(1.0 / np.cos(np.radians(c.lat)), rel=0.1)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="latitude 85"):
        WorldParams(size_px=512, pixel_size_m=1000.0, center_lat_deg=80.0).validate()
    with pytest.raises(ValueError, match="min_diameter_px"):
        WorldParams(size_px=64, min_diameter_px=20.0).validate()
    with pytest.raises(ValueError, match="mare_age_ga"):
        WorldParams(mare_age_ga=3.0).validate()


def test_synth_command(tmp_path):
    from etl.cli import main

    assert main(["synth", "--out", str(tmp_path / "w"), "--size", "96", "--seed", "2", "--quiet"]) == 0
    for name in ("dom.tif", "dem.tif", "units.tif", "catalogue.csv", "world.json"):
        assert (tmp_path / "w" / name).is_file()
    assert json.loads((tmp_path / "w" / "world.json").read_text())["params"]["size_px"] == 96
    old = ["synth", "--out", str(tmp_path / "old"), "--size", "96", "--degradation-law", "linear", "--quiet"]
    assert main(old) == 0
    params = json.loads((tmp_path / "old" / "world.json").read_text())["params"]
    assert (params["degradation_law"], params["diffusivity_m2_per_myr"], params["crater_density_per_mpx"]) == \
        ("linear", 15.0, 250.0)


def test_chronology_effective_time():
    from etl.chronology import effective_time_ga, neukum_n1_per_km2

    # Neukum et al. (2001): ~1e-3 craters >= 1 km per km^2 at 1 Ga, ~0.03 at 3.85 Ga, ~1 at 4.4 Ga.
    assert float(neukum_n1_per_km2(1.0)) == pytest.approx(8.38e-4 + 5.44e-14 * np.expm1(6.93), rel=1e-12)
    assert 0.02 < float(neukum_n1_per_km2(3.85)) < 0.03 and 0.9 < float(neukum_n1_per_km2(4.4)) < 1.0
    ages = np.linspace(0.0, 4.5, 200)
    tau = effective_time_ga(ages)
    assert tau[0] == 0.0 and np.all(np.diff(tau) > 0)
    # The last 3 Ga run at about today's rate; the heavy bombardment multiplies the pre-Imbrian time.
    assert float(effective_time_ga(1.1)) == pytest.approx(1.1, rel=1e-3)
    assert float(effective_time_ga(3.85)) == pytest.approx(28.9, rel=0.01)
    assert float(effective_time_ga(4.4)) == pytest.approx(1139.0, rel=0.01)
    np.testing.assert_array_equal(effective_time_ga(ages, "linear"), ages)
    with pytest.raises(ValueError, match="degradation law"):
        effective_time_ga(1.0, "exponential")


def _mean_measured_d_over_d(w):
    cat, dem = w.catalogue, w.dem_m
    sel = cat[~cat.complex & (cat.diameter_px >= 12) & _interior(cat, dem.shape)]
    d_over_d = [_measured_depth_m(dem, c, np.cos(np.radians(c.lat))) / (c.diameter_km * 1000.0)
                for c in sel.itertuples()]
    return pd.Series(d_over_d).groupby(sel.age_class.to_numpy()).mean()


def test_flux_law_separates_the_old_classes(world, world_dir):
    """Degradation follows the cumulative impact flux: pre-Imbrian craters (heavy bombardment) are far
    shallower than Imbrian ones in the DEM, which a linear law (the same world otherwise) does not give."""
    from etl.chronology import effective_time_ga

    meta = world["meta"]["params"]
    assert meta["degradation_law"] == "flux"
    cat = world["cat"]
    np.testing.assert_allclose(
        cat.diffusion_length_m,
        np.sqrt(2.0 * meta["diffusivity_m2_per_myr"] * effective_time_ga(cat.age_ga) * 1000.0), rtol=1e-6)
    flux = _mean_measured_d_over_d(synthesize_world(load_world_params(world_dir / "world.json")))
    linear = _mean_measured_d_over_d(synthesize_world(**{**WORLD, "degradation_law": "linear"}))
    old_flux, old_linear = (flux["Nc"] + flux["pNc"]) / 2, (linear["Nc"] + linear["pNc"]) / 2
    assert flux["Ic"] - old_flux > 0.05
    assert linear["Ic"] - old_linear < 0.03
    assert flux["Cc"] > flux["Ec"] > flux["Ic"]  # the young classes stay crisp, in order


def test_worlds_without_a_law_are_linear(world_dir, tmp_path):
    meta = json.loads((world_dir / "world.json").read_text())
    del meta["params"]["degradation_law"]  # a world.json written before the flux law
    (tmp_path / "world.json").write_text(json.dumps(meta))
    assert load_world_params(tmp_path / "world.json").degradation_law == "linear"
    with pytest.raises(ValueError, match="degradation_law"):
        WorldParams(degradation_law="exponential").validate()
    # The law's defaults fill what is left unset, and are recorded.
    assert WorldParams(degradation_law="linear").diffusivity_m2_per_myr == 15.0
    assert WorldParams().diffusivity_m2_per_myr == 2.5
