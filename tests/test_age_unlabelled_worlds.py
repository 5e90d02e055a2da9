"""Extra unlabelled craters from other synthetic worlds (``--unlabelled-world``): they reach Mean
Teacher's unlabelled pool without labels, leave the own world's spatial split unchanged, and a world
that is the test world (or the training world) is refused."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from age_net.config import get_age_cfg
from age_net.data import OTHER_WORLD_COLUMN, AgeCropDataset, CraterSet, append_unlabelled, fit_input_stats
from age_net.engine import AgeTrainer, check_unlabelled_worlds, make_split
from etl.attributes import AttributeSchema

CFG = ["MODEL.MODE", "attributes", "DATA.LABEL_FRACTION", "0.5", "MEAN_TEACHER.ENABLED", "True",
       "SOLVER.BATCH_SIZE", "16", "SOLVER.MAX_ITER", "2", "MODEL.DEVICE", "cpu", "INPUT.ATTRIBUTE_SIZE_PX", "8"]


def _crater_set(n: int, seed: int, labelled: bool = True) -> CraterSet:
    """n craters over a 4 x 4 degree map, two attributes that carry the class, 8 px crops."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n) if labelled else np.full(n, -1)
    craters = pd.DataFrame({"lon": rng.uniform(-2, 2, n), "lat": rng.uniform(-2, 2, n),
                            "diameter_km": rng.uniform(1, 5, n),
                            "age_class": [["pNc", "Nc", "Ic", "Ec", "Cc"][k] if k >= 0 else None for k in labels]})
    attributes = pd.DataFrame({"a": labels + rng.normal(0, 0.1, n), "b": rng.normal(0, 1, n)})
    return CraterSet(craters=craters, dom=rng.normal(size=(n, 8, 8)).astype(np.float32),
                     dem_m=rng.normal(size=(n, 8, 8)).astype(np.float32), valid=np.ones(n, bool),
                     reasons=[""] * n, attributes=attributes, schema=AttributeSchema.build(["a", "b"], ["1", "1"]),
                     labels=labels.astype(np.int64), crop_settings=dict(size_px=8, side_diameters=3.0,
                                                                        attribute_size_px=8))


def test_other_worlds_join_the_unlabelled_pool_without_labels():
    cfg = get_age_cfg(None, CFG)
    own = _crater_set(400, seed=0)
    others = {"w1": _crater_set(150, seed=1), "w2": _crater_set(100, seed=2)}
    cs = append_unlabelled(own, others)
    assert len(cs) == 650 and cs.other_world.sum() == 250 and not cs.other_world[:400].any()
    # The labels of the other worlds never travel, not even in the crater table.
    assert (cs.labels[400:] == -1).all() and cs.craters["age_class"].iloc[400:].isna().all()
    assert (cs.labels[:400] == own.labels).all()
    assert set(cs.craters[OTHER_WORLD_COLUMN].iloc[400:]) == {"w1", "w2"}
    # The own world's split is the one it has without them; every other-world crater is unlabelled data.
    for seed in range(3):
        alone, split = make_split(own, cfg, seed), make_split(cs, cfg, seed)
        for part in ("train", "val", "test"):
            assert (getattr(alone, part) == getattr(split, part)).all()
        assert set(split.unlabelled) == set(alone.unlabelled) | set(range(400, 650))
    # What the Mean-Teacher loader draws from them: two noisy views, label -1.
    stats = fit_input_stats(cs, np.concatenate([split.train, split.unlabelled]))
    ds = AgeCropDataset(cs, stats, cfg, split.unlabelled, augment=True, views=2, seed=0)
    items = [ds[i] for i in np.flatnonzero(split.unlabelled >= 400)]
    assert len(items) == 250 and all(int(it["label"]) == -1 for it in items)
    assert all(not torch.equal(it["attributes"], it["attributes2"]) for it in items[:10])
    # ... and a Mean-Teacher step runs over them.
    trainer = AgeTrainer(cfg, cs, split, None, seed=0, progress=False)
    losses = trainer.step()
    assert np.isfinite(losses["loss_consistency"]) and trainer.split.unlabelled.max() >= 400


def test_a_labelled_other_world_or_another_schema_is_refused():
    cfg = get_age_cfg(None, CFG)
    cs = append_unlabelled(_crater_set(100, seed=0), {"w1": _crater_set(50, seed=1)})
    cs.labels[120] = 2  # a label that slipped in
    with pytest.raises(ValueError, match="another world carry labels"):
        make_split(cs, cfg, 0)
    other = _crater_set(50, seed=1)
    other = other.select_attributes(["a"])
    with pytest.raises(ValueError, match="schema"):
        append_unlabelled(_crater_set(100, seed=0), {"w1": other})


def _world(path, seed: int, rows: str):
    path.mkdir()
    (path / "catalogue.csv").write_text("lon,lat,diameter_km,age_class\n" + rows)
    (path / "world.json").write_text(json.dumps({"params": {"seed": seed, "size_px": 64}}))
    return path


def test_the_test_world_is_refused_as_unlabelled_data(tmp_path):
    w0 = _world(tmp_path / "w0", 0, "0,0,1,Cc\n")
    w1 = _world(tmp_path / "w1", 1, "0,0,2,Ec\n")
    w7 = _world(tmp_path / "w7", 7, "1,1,1,Ic\n")
    copy7 = _world(tmp_path / "copy_of_w7", 7, "1,1,1,Ic\n")      # the test world written elsewhere
    regen7 = _world(tmp_path / "regen7", 7, "1,1,1.5,Ic\n")       # same generator parameters
    assert check_unlabelled_worlds([w1], world=w0, test_world=w7) == [w1]
    for bad in (w7, copy7, regen7, tmp_path / "w7" / ".."  / "w7"):
        with pytest.raises(ValueError, match="test world"):
            check_unlabelled_worlds([w1, bad], world=w0, test_world=w7)
    with pytest.raises(ValueError, match="training world"):
        check_unlabelled_worlds([w0], world=w0, test_world=w7)
    with pytest.raises(ValueError, match="given twice"):
        check_unlabelled_worlds([w1, w1], world=w0, test_world=w7)
    with pytest.raises(ValueError, match="no catalogue"):
        check_unlabelled_worlds([tmp_path], world=w0, test_world=w7)
