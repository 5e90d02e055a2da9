"""The age net end to end on a small synthetic world: crops and attributes, a few Mean-Teacher
steps, a resumable checkpoint with provenance, prediction into the ages contract (refusing a
model of another attribute schema), and the ages file in PostGIS joined to its atlas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from age_net.config import get_age_cfg
from age_net.data import build_crater_set, unit_source
from age_net.engine import AgeTrainer, make_split
from age_net.predict import load_age_model, predict_crater_set, write_atlas_ages
from etl.contracts import AtlasProvenance, read_ages, write_atlas

pytestmark = pytest.mark.slow  # a world, crops and a few training steps: ~30 s in all

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "age_net" / "quick_schedules" / \
    "agenet_mt_R18_S32_instant_test.yaml"
OPTS = ["MODEL.TRUNK", "test_resnet", "DATA.BLOCK_DEG", "0.5", "DATA.LABEL_FRACTION", "0.5"]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from etl.synthetic import generate_world

    out = tmp_path_factory.mktemp("age_world")
    generate_world(out, size_px=640, seed=5, center_lat_deg=30.0)
    return out


@pytest.fixture(scope="module")
def crater_set(world):
    cat = pd.read_csv(world / "catalogue.csv")
    return build_crater_set(cat, dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=unit_source(world),
                            size_px=32, attribute_size_px=64)


@pytest.fixture(scope="module")
def trained(crater_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("age_run")
    cfg = get_age_cfg(str(CONFIG), OPTS + ["OUTPUT_DIR", str(out)])
    trainer = AgeTrainer(cfg, crater_set, make_split(crater_set, cfg, seed=0), out, seed=0, progress=False)
    trainer.train()
    trainer.fit_temperature(trainer.split.val)
    path = trainer.save(out / "model_final.pth", final=True)
    return cfg, trainer, path


def test_crater_set_has_labels_crops_and_attributes(crater_set):
    assert len(crater_set) > 30
    assert crater_set.dom.shape[1:] == (32, 32) and crater_set.dem_m.shape == crater_set.dom.shape
    assert (crater_set.labels >= 0).all() and crater_set.valid.mean() > 0.8
    assert "depth_over_fresh" in crater_set.schema.names
    assert any(n.startswith("strat_") for n in crater_set.schema.names)


def test_attributes_are_measured_on_their_own_crops(crater_set, world, tmp_path):
    from etl.attributes import crater_attributes
    from etl.crops import CropSettings, extract_crops, native_windows

    cat = pd.read_csv(world / "catalogue.csv")
    fine = extract_crops(cat, dom_path=world / "dom.tif", dem_path=world / "dem.tif", settings=CropSettings(size_px=64))
    attrs, _ = crater_attributes(cat, fine, units=unit_source(world), native_dem=native_windows(world / "dem.tif", cat))
    assert crater_set.crop_settings["attribute_size_px"] == 64 and crater_set.dom.shape[1:] == (32, 32)
    pd.testing.assert_frame_equal(crater_set.attributes, attrs.reset_index(drop=True))
    # A trainer refuses a crater set measured at another size than its config's (prediction would differ).
    cfg = get_age_cfg(str(CONFIG), OPTS + ["OUTPUT_DIR", str(tmp_path), "INPUT.ATTRIBUTE_SIZE_PX", "32"])
    with pytest.raises(ValueError, match="ATTRIBUTE_SIZE_PX 32"):
        AgeTrainer(cfg, crater_set, make_split(crater_set, cfg, seed=0), tmp_path, seed=0, progress=False)


def test_crater_set_round_trips_through_a_file(crater_set, tmp_path):
    from age_net.data import CraterSet

    crater_set.save(tmp_path / "cs.npz")
    back = CraterSet.load(tmp_path / "cs.npz")
    assert back.schema == crater_set.schema
    np.testing.assert_array_equal(back.dem_m, crater_set.dem_m)
    np.testing.assert_array_equal(back.labels, crater_set.labels)
    pd.testing.assert_frame_equal(back.attributes, crater_set.attributes)


def test_split_is_spatial_and_uses_a_fraction_of_labels(crater_set, trained):
    cfg, trainer, _ = trained
    s = trainer.split
    assert len(s.train) and len(s.unlabelled) and len(s.test)
    parts = [set(s.train) | set(s.unlabelled), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    blocks = np.floor(crater_set.craters["lon"] / 0.5) * 1000 + np.floor(crater_set.craters["lat"] / 0.5)
    train_blocks = set(blocks[list(parts[0])])
    assert not train_blocks & set(blocks[list(s.test)])


def test_mean_teacher_trains_and_checkpoint_has_provenance(trained, crater_set):
    cfg, trainer, path = trained
    assert trainer.iteration == cfg.SOLVER.MAX_ITER
    # The teacher is an average of student weights: different from the student, same shapes.
    pairs = zip(trainer.teacher.parameters(), trainer.model.parameters())
    diffs = [float((t - s).detach().abs().max()) for t, s in pairs]
    assert max(diffs) > 0
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    prov = ckpt["provenance"]
    assert prov["model"].startswith("AgeNet/both/test_resnet/dom+dem/S32") and prov["model"].endswith("MT")
    assert len(prov["config_hash"]) == 16 and prov["code_version"]
    assert prov["attribute_schema"] == crater_set.schema.to_dict()
    assert ckpt["predict_with"] == "teacher"


def test_resume_continues_from_the_last_checkpoint(trained, crater_set, tmp_path):
    cfg, _, _ = trained
    cfg = cfg.clone()
    cfg.OUTPUT_DIR = str(tmp_path)
    interrupted = AgeTrainer(cfg, crater_set, make_split(crater_set, cfg, seed=0), tmp_path, seed=0, progress=False)
    interrupted.step()
    interrupted.step()
    interrupted.save(tmp_path / "last_checkpoint.pth")  # as the CHECKPOINT_PERIOD (2) does
    resumed = AgeTrainer(cfg, crater_set, make_split(crater_set, cfg, seed=0), tmp_path, seed=0, progress=False)
    resumed.load(tmp_path / "last_checkpoint.pth")
    assert resumed.iteration == 2
    for a, b in zip(interrupted.teacher.state_dict().values(), resumed.teacher.state_dict().values()):
        assert torch.equal(a, b)
    resumed.train(resume=True)
    assert resumed.iteration == cfg.SOLVER.MAX_ITER == 4
    # A checkpoint of another config is refused instead of silently mixed.
    other = cfg.clone()
    other.SOLVER.BASE_LR = 0.5
    with pytest.raises(ValueError, match="another config"):
        AgeTrainer(other, crater_set, make_split(crater_set, other, seed=0), tmp_path, seed=0,
                   progress=False).train(resume=True)


def test_predicted_probabilities_sum_to_one(trained, crater_set):
    _, _, path = trained
    loaded = load_age_model(path, device="cpu")
    probs = predict_crater_set(loaded, crater_set, np.flatnonzero(crater_set.valid))
    assert probs.shape == (int(crater_set.valid.sum()), 5)
    assert np.all(probs >= 0) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert loaded.model.temperature.item() > 0


def test_load_age_model_predicts_with_the_teacher_and_loads_the_student_on_request(trained):
    _, trainer, path = trained
    def same(net, ref):
        return all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))

    assert same(load_age_model(path, device="cpu").model, trainer.teacher)   # Mean Teacher: the teacher predicts
    student = load_age_model(path, device="cpu", network="model").model
    assert same(student, trainer.model) and not same(student, trainer.teacher)


def test_a_model_refuses_attributes_of_another_schema(trained, world, crater_set):
    from etl.attributes import AttributeSchemaError

    _, _, path = trained
    loaded = load_age_model(path, device="cpu")
    cat = pd.read_csv(world / "catalogue.csv").head(5)
    without_units = build_crater_set(cat, dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=None,
                                     size_px=32)
    with pytest.raises(AttributeSchemaError, match="strat_"):
        predict_crater_set(loaded, without_units)


def test_attribute_selection_is_the_models_schema_and_prediction_applies_it(crater_set, world, tmp_path):
    from etl.attributes import ATTRIBUTE_DEFINITIONS_VERSION

    assert "native_log10_diffusion_length_m" in crater_set.schema.names  # sigma on the DEM's own pixels
    picked = crater_set.select_attributes(["native_*", "strat_*"])
    assert picked.schema.names and all(n.startswith(("native_", "strat_")) for n in picked.schema.names)
    assert list(picked.attributes.columns) == list(picked.schema.names)
    assert picked.schema.version.startswith(f"{ATTRIBUTE_DEFINITIONS_VERSION}:") and picked.schema != crater_set.schema
    with pytest.raises(ValueError, match="match no attribute"):
        crater_set.select_attributes(["no_such_*"])
    cfg = get_age_cfg(str(CONFIG), OPTS + ["OUTPUT_DIR", str(tmp_path), "MODEL.MODE", "attributes",
                                           "SOLVER.MAX_ITER", "5", "ATTRIBUTES.USE", "['native_*','strat_*']"])
    trainer = AgeTrainer(cfg, crater_set, make_split(crater_set, cfg, seed=0), tmp_path, seed=0, progress=False)
    assert trainer.model.num_attributes == len(picked.schema.names)
    trainer.train()
    loaded = load_age_model(trainer.save(tmp_path / "model_final.pth", final=True), device="cpu")
    assert loaded.schema == picked.schema
    probs = predict_crater_set(loaded, crater_set, np.flatnonzero(crater_set.valid))  # the full set, selected
    assert np.allclose(probs.sum(axis=1), 1.0)
    cat = pd.read_csv(world / "catalogue.csv").head(5)
    without_units = build_crater_set(cat, dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=None,
                                     size_px=32, attribute_size_px=64)
    with pytest.raises(ValueError, match="strat_"):  # the selection cannot be made: refused, never guessed
        predict_crater_set(loaded, without_units)


def _atlas_from_catalogue(world: Path, path: Path, run: str) -> pd.DataFrame:
    cat = pd.read_csv(world / "catalogue.csv")
    half = cat["diameter_px"] / 2
    atlas = pd.DataFrame({"lon": cat["lon"], "lat": cat["lat"], "diameter_km": cat["diameter_km"],
                          "score": 0.9, "x0_px": cat["col_px"] - half, "y0_px": cat["row_px"] - half,
                          "x1_px": cat["col_px"] + half, "y1_px": cat["row_px"] + half})
    prov = AtlasProvenance(run_name=run, model="catalogue", config_hash="0" * 16,
                           source_mosaics=(str(world / "dom.tif"),), code_version="test")
    return write_atlas(atlas, path, prov)


def test_ages_file_follows_the_contract(trained, world, tmp_path):
    _, _, model = trained
    atlas = _atlas_from_catalogue(world, tmp_path / "atlas.gpkg", "age-net-file-test")
    ages, skipped = write_atlas_ages(tmp_path / "atlas.gpkg", model, tmp_path / "ages.parquet",
                                     dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=unit_source(world),
                                     device="cpu", progress=False)
    back, prov = read_ages(tmp_path / "ages.parquet", atlas_ids=atlas["crater_id"])
    assert len(back) + len(skipped) == len(atlas) and len(back) > 0.8 * len(atlas)
    assert prov.atlas_run == "age-net-file-test" and prov.model.endswith("model_final.pth")
    assert all(": " in s for s in skipped)  # each skipped crater says why


@pytest.mark.db
def test_ages_file_loads_into_postgis_and_joins_the_atlas(trained, world, tmp_path, atlas_url, atlas_engine):
    import uuid

    from sqlalchemy import text

    from etl.load import load_ages, load_atlas

    _, _, model = trained
    run = f"age-net-db-{uuid.uuid4().hex[:8]}"
    atlas = _atlas_from_catalogue(world, tmp_path / "atlas.gpkg", run)
    ages, _ = write_atlas_ages(tmp_path / "atlas.gpkg", model, tmp_path / "ages.parquet",
                               dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=unit_source(world),
                               run_name=f"{run}-ages", device="cpu", progress=False)
    load_atlas(tmp_path / "atlas.gpkg", engine=atlas_engine)
    load_ages(tmp_path / "ages.parquet", engine=atlas_engine)
    with atlas_engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.crater_id, e.age_class, e.p_pnc + e.p_nc + e.p_ic + e.p_ec + e.p_cc AS total, c.diameter_km "
            "FROM age_estimates e JOIN age_runs a ON a.id = e.age_run_id JOIN craters c ON c.id = e.crater_pk "
            "JOIN detection_runs d ON d.id = c.run_id WHERE a.run_name = :ar AND d.run_name = :dr"),
            {"ar": f"{run}-ages", "dr": run}).fetchall()
    got = pd.DataFrame(rows, columns=["crater_id", "age_class", "total", "diameter_km"]).set_index("crater_id")
    assert len(got) == len(ages)
    expected = ages.set_index("crater_id").loc[got.index]
    assert (got["age_class"] == expected["age_class"]).all()
    assert np.allclose(got["total"], 1.0, atol=1e-6)
    assert np.allclose(got["diameter_km"], atlas.set_index("crater_id").loc[got.index, "diameter_km"])
    # The query functions of the ages: everything of the run, and a cap search checked by brute force.
    from atlas_db import queries
    from etl.moon import great_circle_distance_m

    with atlas_engine.connect() as conn:
        every = queries.craters_with_age(conn, f"{run}-ages")
        lon0, lat0 = float(atlas["lon"].median()), float(atlas["lat"].median())
        near = queries.dated_craters_within(conn, lon0, lat0, 20.0, f"{run}-ages")
        near_cc = queries.dated_craters_within(conn, lon0, lat0, 20.0, f"{run}-ages", age_class="Cc")
    assert sorted(every["crater_id"]) == sorted(ages["crater_id"])
    dist_km = great_circle_distance_m(every["lon"], every["lat"], lon0, lat0) / 1000.0
    assert sorted(near["crater_id"]) == sorted(every.loc[dist_km <= 20.0, "crater_id"]) and len(near) > 5
    assert near["distance_km"].is_monotonic_increasing
    assert sorted(near_cc["crater_id"]) == sorted(near.loc[near["age_class"] == "Cc", "crater_id"])


def test_run_trials_reports_mean_and_spread(crater_set, tmp_path):
    import json

    from age_net.engine import run_trials

    cfg = get_age_cfg(str(CONFIG), OPTS + ["OUTPUT_DIR", str(tmp_path), "TRIALS", "2", "MEAN_TEACHER.ENABLED", "False"])
    summary = run_trials(cfg, crater_set, progress=False, extra_test={"again": crater_set}, log=lambda *_: None)
    accs = [t["test"]["accuracy"] for t in summary["trials"]]
    assert summary["test"]["accuracy"]["mean"] == pytest.approx(np.mean(accs))
    assert summary["test"]["accuracy"]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert summary["trials"][0]["seed"] != summary["trials"][1]["seed"]
    assert json.loads((tmp_path / "summary.json").read_text())["model"] == summary["model"]
    for t in (0, 1):
        preds = pd.read_csv(tmp_path / f"trial{t}" / "test_predictions.csv")
        assert len(preds) == summary["trials"][t]["test"]["n"]
        probs = preds[["p_pnc", "p_nc", "p_ic", "p_ec", "p_cc"]].to_numpy()
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        assert (tmp_path / f"trial{t}" / "confusion_test.png").stat().st_size > 1000
        assert (tmp_path / f"trial{t}" / "reliability_test.png").exists()
    # Resuming reuses finished trials instead of training again.
    again = run_trials(cfg, crater_set, resume=True, progress=False, log=lambda *_: None)
    assert [t["test"]["accuracy"] for t in again["trials"]] == accs


def test_an_empty_atlas_gets_an_empty_age_table(trained, world, tmp_path):
    _, _, model = trained
    atlas = _atlas_from_catalogue(world, tmp_path / "full.gpkg", "age-net-empty").iloc[:0]
    prov = AtlasProvenance(run_name="age-net-empty", model="catalogue", config_hash="0" * 16,
                           source_mosaics=(str(world / "dom.tif"),), code_version="test")
    write_atlas(atlas, tmp_path / "empty.gpkg", prov)
    ages, skipped = write_atlas_ages(tmp_path / "empty.gpkg", model, tmp_path / "ages.parquet",
                                     dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=unit_source(world),
                                     device="cpu", progress=False)
    back, prov_back = read_ages(tmp_path / "ages.parquet")
    assert len(ages) == len(back) == 0 and skipped == [] and prov_back.atlas_run == "age-net-empty"


def test_demo_age_step_dates_the_atlas_and_draws_the_map(trained, world, tmp_path):
    from etl.commands import demo_ages

    _, _, model = trained
    atlas = _atlas_from_catalogue(world, tmp_path / "atlas.gpkg", "age-net-demo")
    ages_path = demo_ages.date_atlas(tmp_path, world, tmp_path / "atlas.gpkg", model, "age-net-demo", fresh=True)
    ages, prov = read_ages(ages_path, atlas_ids=atlas["crater_id"])
    assert prov.run_name == "age-net-demo-ages" and len(ages) > 0.8 * len(atlas)
    assert (tmp_path / "age_map.png").stat().st_size > 10_000
    # The unit under each crater, read from units.tif, is the one the world recorded for it.
    cat = pd.read_csv(world / "catalogue.csv")
    units = demo_ages.units_at(world, cat["lon"], cat["lat"])
    assert np.mean(units == cat["unit"].to_numpy()) > 0.97


def test_demo_retrains_a_model_of_older_attribute_definitions(trained, monkeypatch):
    import etl.attributes
    from etl.commands import demo_ages

    _, _, model = trained
    assert demo_ages._attribute_definitions_current(model)
    # The same checkpoint under newer attribute code: its attributes would be refused, so no reuse.
    monkeypatch.setattr(etl.attributes, "ATTRIBUTE_DEFINITIONS_VERSION", etl.attributes.ATTRIBUTE_DEFINITIONS_VERSION + 1)
    assert not demo_ages._attribute_definitions_current(model)
