"""The crater verifier (etl.verifier): its DEM features measure a bowl as a bowl, a model fitted on
bowls and flat ground ranks an unseen bowl above flat ground, the basin flag, the candidate floor,
and the feature schema saved with a model."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from etl.attributes import AttributeSchemaError
from etl.synthetic import crater_shape_km
from etl.verifier import FEATURES, CraterVerifier, VerifierSettings, rescore, verifier_features
from lunar_bowls import bowl_dem, write_global
from script_loader import load_script

DEPTH_M = 2000.0
D_KM = 240.0  # 16 pixels of the 0.5 degree test mosaic across


def _bowls(lat0: float) -> list[tuple[float, float, float]]:
    return [(lon, lat0 + 20.0 * (k % 2), D_KM) for k, lon in enumerate(np.arange(-150.0, 151.0, 30.0))]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two DEMs of paraboloid bowls (one to fit on, one to test on) on flat ground."""
    tmp = tmp_path_factory.mktemp("verifier")
    out = {}
    for name, lat0 in (("fit", -40.0), ("test", 10.0)):
        craters = _bowls(lat0)
        path = tmp / f"{name}.tif"
        write_global(path, bowl_dem(craters, depth_m=DEPTH_M))
        flat = [(lon + 15.0, lat, d) for lon, lat, d in craters]  # between the bowls: flat ground
        table = pd.DataFrame(craters + flat, columns=["lon", "lat", "diameter_km"]).assign(score=0.5)
        out[name] = (path, table, np.r_[np.ones(len(craters)), np.zeros(len(flat))])
    return out


def test_a_bowl_measures_as_a_bowl_and_flat_ground_as_flat(world):
    path, table, label = world["test"]
    f = verifier_features(table, path)
    assert list(f.columns) == list(FEATURES) and f.index.equals(table.index)
    bowl, flat = f[label == 1], f[label == 0]
    # Paraboloid z = -depth (1 - r^2): the mean within 0.7 R is -depth (1 - 0.49 / 2), the 1-2 R annulus 0.
    expected = DEPTH_M * (1.0 - 0.49 / 2.0) / D_KM
    np.testing.assert_allclose(bowl["bowl_contrast_m_per_km"], expected, rtol=0.15)
    np.testing.assert_allclose(flat["bowl_contrast_m_per_km"], 0.0, atol=1e-3)
    fresh_depth_m = float(crater_shape_km(np.asarray(D_KM))["depth_km"]) * 1000.0
    np.testing.assert_allclose(bowl["depth_over_fresh"], DEPTH_M / fresh_depth_m, rtol=0.1)
    assert (flat["depth_over_fresh"].abs() < 0.01).all()
    # The bowl's wall (0.3-0.9 R) rises at atan(2 depth r / R^2): 0.6-1.7 degrees.
    assert bowl["wall_slope_mean_deg"].min() > 0.9 > 2.0 * flat["wall_slope_mean_deg"].max()
    np.testing.assert_allclose(f["detector_logit"], 0.0, atol=1e-12)
    np.testing.assert_allclose(f["log10_diameter_km"], np.log10(D_KM))


def test_fitted_on_one_world_a_bowl_outscores_flat_ground_on_another(world, tmp_path):
    path, table, label = world["fit"]
    model = CraterVerifier.fit(verifier_features(table, path), label, l2=0.1)
    model.save(tmp_path / "verifier.json")
    model = CraterVerifier.load(tmp_path / "verifier.json")
    path, table, label = world["test"]
    p = rescore(table, model, dem_path=path)
    assert p["score"][label == 1].min() > 0.9 > 0.1 > p["score"][label == 0].max()
    np.testing.assert_array_equal(p["detector_score"], table["score"])


def test_the_schema_is_checked(world, tmp_path):
    path, table, label = world["fit"]
    model = CraterVerifier.fit(verifier_features(table, path), label)
    saved = model.to_dict()
    assert saved["schema"]["names"] == list(FEATURES)
    for change in ("rename", "unit"):
        d = json.loads(json.dumps(saved))
        if change == "rename":
            d["schema"]["names"][2] = "depth_m"
        else:
            d["schema"]["units"][2] = "m"
        (tmp_path / "bad.json").write_text(json.dumps(d))
        with pytest.raises(AttributeSchemaError):
            CraterVerifier.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="bowl_contrast_m_per_km"):
        model.predict(pd.DataFrame({n: [0.0] for n in FEATURES if n != "bowl_contrast_m_per_km"}))


def test_fit_recovers_a_known_logistic_law():
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(20000, len(FEATURES))), columns=list(FEATURES))
    true = np.zeros(len(FEATURES))
    true[0], true[7] = 2.0, -1.0
    y = (rng.random(len(x)) < 1.0 / (1.0 + np.exp(-(0.5 + x.to_numpy() @ true)))).astype(float)
    model = CraterVerifier.fit(x, y, l2=1e-6)
    # Standardised coefficients times the std give the raw law back.
    np.testing.assert_allclose(model.coef / model.std, true, atol=0.08)
    # NaN features take the training median; rows with NaN labels are left out of the fit.
    assert np.isfinite(model.predict(x.iloc[:1].assign(depth_over_fresh=np.nan))).all()
    y_nan = y.copy()
    y_nan[:10000] = np.nan
    half = CraterVerifier.fit(x, y_nan, l2=1e-6)
    np.testing.assert_allclose(half.coef / half.std, true, atol=0.15)


def test_basin_flag_and_candidate_floor(world):
    path, _, _ = world["test"]
    lon0, lat0 = -150.0, 10.0  # a bowl of the test world, here a "basin" detection
    table = pd.DataFrame({"lon": [lon0, lon0 + 0.5, lon0 + 25.0, lon0 + 0.2],
                          "lat": [lat0, lat0, lat0, lat0],
                          "diameter_km": [240.0, 30.0, 30.0, 30.0],
                          "score": [0.9, 0.6, 0.6, 0.05]})
    settings = VerifierSettings(basin_min_km=150.0, basin_min_score=0.5, min_detector_score=0.1)
    f = verifier_features(table, path, settings=settings)
    # Inside the basin (15 km from its centre) / far outside / the basin itself.
    assert f["in_large_basin"].tolist() == [0.0, 1.0, 0.0, 1.0]
    # Under the candidate floor: not measured.
    assert f.iloc[3][["depth_over_fresh", "bowl_contrast_m_per_km"]].isna().all()
    assert f.iloc[:3]["bowl_contrast_m_per_km"].notna().all()
    low = table.assign(score=[0.9, 0.6, 0.6, 0.05])
    low.loc[0, "score"] = 0.4  # a basin scored under basin_min_score is no basin
    assert verifier_features(low, path, settings=settings)["in_large_basin"].sum() == 0
    model = CraterVerifier.fit(pd.concat([f.iloc[:3]] * 2), [1, 0, 1, 0, 1, 0], settings=settings)
    assert rescore(table, model, f)["score"].iloc[3] == 0.0


def test_eval_lola_refuses_a_verifier_fitted_on_other_test_time_views():
    eval_lola = load_script("benchmarks/eval_lola.py")
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(40, len(FEATURES))), columns=list(FEATURES))
    model = CraterVerifier.fit(x, np.arange(40) % 2)
    model.notes = {"detector": {"tta": []}}
    assert eval_lola.verifier_mismatch(model, []) is None
    why = eval_lola.verifier_mismatch(model, ["hflip", "vflip", "rot90"])
    assert "none" in why and "--tta none" in why
    model.notes = {"detector": {"tta": ["hflip", "vflip", "rot90"]}}
    assert eval_lola.verifier_mismatch(model, ["hflip", "vflip", "rot90"]) is None
    assert "--tta hflip,vflip,rot90" in eval_lola.verifier_mismatch(model, [])
    model.notes = {}  # a verifier saved without notes: nothing to check against
    assert eval_lola.verifier_mismatch(model, ["hflip"]) is None


def test_measure_mask_measures_only_its_rows_and_the_basin_flag_sees_all(world):
    path, _, _ = world["test"]
    lon0, lat0 = -150.0, 10.0
    table = pd.DataFrame({"lon": [lon0, lon0 + 0.5, lon0 + 25.0], "lat": [lat0] * 3,
                          "diameter_km": [240.0, 30.0, 30.0], "score": [0.9, 0.6, 0.6]})
    settings = VerifierSettings(basin_min_km=150.0, basin_min_score=0.5)
    every = verifier_features(table, path, settings=settings)
    some = verifier_features(table, path, settings=settings, measure=np.array([False, True, False]))
    # The basin (row 0) is not measured but still makes row 1 a ring.
    assert some["in_large_basin"].tolist() == every["in_large_basin"].tolist() == [0.0, 1.0, 0.0]
    assert some.iloc[[0, 2]][["depth_over_fresh", "bowl_contrast_m_per_km"]].isna().all().all()
    pd.testing.assert_series_equal(some.iloc[1], every.iloc[1])
    with pytest.raises(ValueError, match="measure"):
        verifier_features(table, path, measure=np.array([True, False]))


def test_stacked_fit_weighs_the_detector_on_the_stack_sample():
    """In its training region a detector's logit separates craters far better than elsewhere: the
    plain fit trusts it too much, the stacked one learns its weight from the other sample."""
    rng = np.random.default_rng(1)
    names = list(FEATURES)

    def sample(n, detector_gain):
        x = pd.DataFrame(rng.normal(size=(n, len(names))), columns=names)
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(1.0 * x["detector_logit"] + 2.0 * x["bowl_contrast_m_per_km"]))))
        # What the detector reports: its logit scaled by the gain (overconfident where it was trained).
        return x.assign(detector_logit=detector_gain * x["detector_logit"]), y.astype(float)

    train, y_train = sample(20000, 5.0)
    stack, y_stack = sample(4000, 1.0)
    fresh, y_fresh = sample(20000, 1.0)
    plain = CraterVerifier.fit(train, y_train, l2=1e-6)
    stacked = CraterVerifier.fit_stacked(train, y_train, stack, y_stack, l2=1e-6)
    # The true law elsewhere: 1.0 per unit of detector logit, 2.0 per unit of bowl contrast.
    raw = stacked.coef / stacked.std
    assert abs(raw[0] - 1.0) < 0.15 and abs(raw[names.index("bowl_contrast_m_per_km")] - 2.0) < 0.3
    assert abs((plain.coef / plain.std)[0] - 0.2) < 0.05  # 1.0 / 5: the plain fit's in-sample weight

    def log_loss(model):
        p = np.clip(model.predict(fresh), 1e-9, 1 - 1e-9)
        return -np.mean(y_fresh * np.log(p) + (1 - y_fresh) * np.log(1 - p))

    assert log_loss(stacked) < log_loss(plain) - 0.02  # 0.446 against 0.489
    # One ordinary model of FEATURES: it saves, loads and predicts the same.
    d = CraterVerifier(**{k: getattr(stacked, k) for k in ("coef", "intercept", "mean", "std", "fill", "l2")})
    np.testing.assert_allclose(d.predict(fresh.head(50)), stacked.predict(fresh.head(50)))


def test_lola_verifier_auc_is_the_area_under_the_roc_curve():
    m = load_script("benchmarks/lola_verifier_auc.py")
    y = np.array([0, 0, 1, 1, np.nan])
    assert m.roc_auc(y, np.array([1.0, 2.0, 3.0, 4.0, 0.0])) == 1.0
    assert m.roc_auc(y, np.array([4.0, 3.0, 2.0, 1.0, 0.0])) == 0.0
    assert m.roc_auc(y, np.array([1.0, 3.0, 2.0, 4.0, np.nan])) == 0.75  # 3 of the 4 pairs in order
    assert m.roc_auc(y, np.ones(5)) == 0.5                               # ties count half
    assert np.isnan(m.roc_auc(np.zeros(3), np.arange(3.0)))
