"""ATTRIBUTES.CONTEXT: relative-age evidence (etl.superposition) as an option of the age net, the same at
training and prediction: the config key, the inputs it needs, a model trained with it refusing crater sets
measured without it, and the round trip through tools/train_age_net.py and ``deepcraters ages``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from age_net.config import context_parts, get_age_cfg

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "age_net" / "quick_schedules" / \
    "agenet_mt_R18_S32_instant_test.yaml"
OPTS = ["MODEL.TRUNK", "test_resnet", "DATA.BLOCK_DEG", "0.5", "DATA.LABEL_FRACTION", "0.5"]


def test_context_key_parses_parts_and_refuses_unknown_ones():
    assert context_parts(get_age_cfg(str(CONFIG))) == ()  # off by default
    assert context_parts(get_age_cfg(str(CONFIG), ["ATTRIBUTES.CONTEXT", "all"])) == ("superposition", "basins",
                                                                                       "rays")
    # Column order is fixed whatever the order written.
    assert context_parts(get_age_cfg(str(CONFIG), ["ATTRIBUTES.CONTEXT", "rays, superposition"])) == (
        "superposition", "rays")
    with pytest.raises(ValueError, match="unknown part.*moon"):
        get_age_cfg(str(CONFIG), ["ATTRIBUTES.CONTEXT", "basins,moon"])


def test_context_source_wraps_units_and_says_which_input_is_missing(tmp_path):
    from age_net.data import context_source
    from etl.superposition import LUNAR_BASINS, CraterContext

    assert context_source(None, "none") is None
    with pytest.raises(ValueError, match="--albedo"):
        context_source(None, "rays")
    with pytest.raises(ValueError, match="no such file"):
        context_source(None, "rays", albedo=tmp_path / "missing.tif")
    ctx = context_source(None, "superposition,basins", min_diameter_km=8.0)
    assert isinstance(ctx, CraterContext) and ctx.superposition and ctx.basins == LUNAR_BASINS
    assert ctx.albedo is None and ctx.min_diameter_km == 8.0
    assert context_source(None, "superposition").basins == ()


def test_superposition_against_a_reference_table_ignores_the_crater_itself():
    from etl.superposition import CraterContext, superposition_attributes

    # A 40 km crater with two 10 km craters on its floor and a 100 km host; the reference lists the
    # crater again (slightly off: a catalogue's version of an atlas crater) and the others.
    target = pd.DataFrame({"lon": [0.0], "lat": [0.0], "diameter_km": [40.0]})
    reference = pd.DataFrame({"lon": [0.01, 0.2, -0.2, 0.6], "lat": [0.0, 0.1, -0.1, 0.0],
                              "diameter_km": [41.0, 10.0, 10.0, 100.0]})
    ctx = CraterContext(None, basins=(), reference=reference, reference_name="cat.csv")
    got, _ = ctx.attributes(target)
    alone, _ = CraterContext(None, basins=()).attributes(target)
    union, _ = superposition_attributes(pd.concat([target, reference.iloc[1:]], ignore_index=True))
    assert got.iloc[0]["strat_sup_floor_count"] == 2 and alone.iloc[0]["strat_sup_floor_count"] == 0
    assert got.iloc[0]["strat_sup_host_count"] == 1
    pd.testing.assert_series_equal(got.iloc[0], union.iloc[0])
    assert "against cat.csv (4 craters)" in ctx.describe()


# --------------------------------------------------------------------------- trained with the context


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from etl.synthetic import generate_world

    out = tmp_path_factory.mktemp("ctx_world")
    generate_world(out, size_px=640, seed=5, center_lat_deg=30.0)
    return out


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """tools/train_age_net.py's main with ATTRIBUTES.CONTEXT superposition,rays on the synthetic world."""
    from age_net.engine import main

    out = tmp_path_factory.mktemp("ctx_run")
    rc = main(["--config-file", str(CONFIG), "--world", str(world), "--quiet", *OPTS,
               "ATTRIBUTES.CONTEXT", "superposition,rays", "ATTRIBUTES.CONTEXT_MIN_DIAMETER_KM", "5.0",
               "OUTPUT_DIR", str(out)])
    assert rc == 0
    return out / "trial0" / "model_final.pth"


@pytest.mark.slow
def test_a_model_trained_with_the_context_records_it_and_refuses_sets_without_it(trained, world):
    from age_net.data import build_crater_set, unit_source
    from age_net.engine import crater_set_from_sources
    from age_net.predict import load_age_model, predict_crater_set
    from etl.attributes import AttributeSchemaError

    loaded = load_age_model(trained, device="cpu")
    assert loaded.context == ("superposition", "rays")
    names = loaded.schema.names
    assert any(n.startswith("strat_sup_") for n in names) and any(n.startswith("strat_ray_") for n in names)
    assert not any(n.startswith("strat_basin_") for n in names)
    # Measured as the model's config says (the product's path): accepted, probabilities sum to one.
    cs = crater_set_from_sources(loaded.cfg, world=world, progress=False, log=lambda *a: None)
    assert cs.schema == loaded.schema
    probs = predict_crater_set(loaded, cs, np.flatnonzero(cs.valid))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    # The same craters without the evidence: refused, and the error names it.
    cat = pd.read_csv(world / "catalogue.csv")
    plain = build_crater_set(cat, dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=unit_source(world),
                             size_px=32, attribute_size_px=64)
    with pytest.raises(AttributeSchemaError, match=r"relative-age evidence \['superposition', 'rays'\].*none"):
        predict_crater_set(loaded, plain)


@pytest.mark.slow
def test_deepcraters_ages_measures_the_models_context(trained, world, tmp_path, capsys):
    from etl.commands.ages import main
    from etl.contracts import AtlasProvenance, read_ages, write_atlas

    cat = pd.read_csv(world / "catalogue.csv")
    half = cat["diameter_px"] / 2
    atlas = write_atlas(pd.DataFrame({
        "lon": cat["lon"], "lat": cat["lat"], "diameter_km": cat["diameter_km"], "score": 0.9,
        "x0_px": cat["col_px"] - half, "y0_px": cat["row_px"] - half, "x1_px": cat["col_px"] + half,
        "y1_px": cat["row_px"] + half}), tmp_path / "atlas.gpkg", AtlasProvenance(
        run_name="ctx", model="catalogue", config_hash="0" * 16, source_mosaics=("dom.tif",), code_version="test"))
    common = ["--atlas", str(tmp_path / "atlas.gpkg"), "--model", str(trained), "--dem", str(world / "dem.tif"),
              "--units", str(world), "--device", "cpu", "--quiet"]
    rc = main(common + ["--dom", str(world / "dom.tif"), "--context-craters", str(world / "catalogue.csv"),
                        "--out", str(tmp_path / "ages.parquet")])
    assert rc == 0
    ages, _ = read_ages(tmp_path / "ages.parquet", atlas_ids=atlas["crater_id"])
    assert len(ages) > 0.8 * len(atlas)
    # The albedo can be given on its own (here the DOM again); the catalogue above only re-listed the
    # atlas's own craters (each matches itself, so it adds none): the ages are the same.
    rc = main(common + ["--dom", str(world / "dom.tif"), "--albedo", str(world / "dom.tif"),
                        "--out", str(tmp_path / "ages2.parquet")])
    assert rc == 0
    again, _ = read_ages(tmp_path / "ages2.parquet", atlas_ids=atlas["crater_id"])
    pd.testing.assert_frame_equal(ages.reset_index(drop=True), again.reset_index(drop=True))
