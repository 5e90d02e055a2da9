"""benchmarks/age_mean_teacher_grid.py: each method's row is chosen on val alone, and rows are compared
trial by trial."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from script_loader import load_script


def _script():
    return load_script("benchmarks/age_mean_teacher_grid.py")


def _summary(val, test, unseen, seeds=(0, 1, 2)):
    trials = [{"seed": s, "n_train": 60, "n_unlabelled": 500, "train_seconds": 1.0,
               "val": {"accuracy": v, "macro_f1": v}, "test": {"accuracy": t, "macro_f1": t},
               "unseen": {"accuracy": u, "macro_f1": u}} for s, v, t, u in zip(seeds, val, test, unseen)]
    return {"model": "AgeNet/attributes/S32", "config_hash": "x", "trials": trials}


def _write(runs: Path, name: str, summary: dict) -> None:
    (runs / name).mkdir(parents=True)
    (runs / name / "summary.json").write_text(json.dumps(summary))


def test_choice_is_made_on_val_and_differences_are_paired(tmp_path):
    g = _script()
    # S2 is best on val though S1 is far better on test: the choice must not look at test.
    _write(tmp_path, "S1", _summary([0.70, 0.70, 0.70], [0.90, 0.90, 0.90], [0.90, 0.90, 0.90]))
    _write(tmp_path, "S2", _summary([0.80, 0.80, 0.80], [0.70, 0.72, 0.74], [0.71, 0.71, 0.71]))
    # Mean Teacher: M1 (training world only) and M2 (other worlds' craters); M2 is best on val.
    _write(tmp_path, "M1", _summary([0.81, 0.81, 0.81], [0.75, 0.75, 0.75], [0.75, 0.75, 0.75]))
    _write(tmp_path, "M2", _summary([0.85, 0.85, 0.85], [0.74, 0.76, 0.78], [0.70, 0.72, 0.74]))
    res = g.collect(tmp_path)
    assert res["chosen_on_val"] == {"supervised": "S2", "mean_teacher": "M2"}
    test = res["chosen_comparison"]["test"]
    assert test["per_trial_points"] == pytest.approx([4.0, 4.0, 4.0])
    assert test["mean_points"] == pytest.approx(4.0) and test["ahead"] == 3
    assert res["chosen_comparison"]["unseen"]["per_trial_points"] == pytest.approx([-1.0, 1.0, 3.0])
    assert res["goal_met"] is False  # +4 on test, +1 on the unseen world
    pools = res["mean_teacher_by_unlabelled_pool"]
    assert pools["training_world_only"]["chosen_on_val"] == "M1"
    assert pools["with_other_worlds"]["chosen_on_val"] == "M2"
    assert pools["training_world_only"]["over_chosen_supervised"]["test"]["per_trial_points"] == pytest.approx(
        [5.0, 3.0, 1.0])
    assert res["runs"]["M2"]["unlabelled_worlds"] == ["w1", "w2", "w3"] and res["runs"]["M1"]["unlabelled_worlds"] == []


def test_rows_of_other_seeds_are_not_paired(tmp_path):
    g = _script()
    _write(tmp_path, "S1", _summary([0.7] * 3, [0.7] * 3, [0.7] * 3))
    _write(tmp_path, "M1", _summary([0.8] * 3, [0.8] * 3, [0.8] * 3, seeds=(5, 6, 7)))
    with pytest.raises(ValueError, match="not paired"):
        g.collect(tmp_path)


def test_commands_add_the_other_worlds_only_where_the_row_says(tmp_path):
    g = _script()
    m1, m2 = g.command("M1", "/w", "/r"), g.command("M2", "/w", "/r")
    assert "--unlabelled-world" not in m1
    assert all(f"--unlabelled-world /w/{w}" in m2 for w in ("w1", "w2", "w3"))
    assert "--test-world /w/w7" in m2 and "--world /w/w0" in m2 and "OUTPUT_DIR /r/M2" in m2


def test_image_grid_round2_is_chosen_on_val_and_rows_are_image_only(tmp_path):
    g = _script()
    # Round 1's val picks round 2's consistency weight, whatever test says.
    _write(tmp_path, "M1", _summary([0.60] * 3, [0.90] * 3, [0.90] * 3))
    _write(tmp_path, "M2", _summary([0.65] * 3, [0.50] * 3, [0.50] * 3))
    assert g.image_round2(tmp_path) == "M3_w100"
    assert g.main(["commands", "--grid", "image", "--round2", "--worlds", "/w", "--runs", str(tmp_path)]) == 0
    rows = g.IMAGE_GRID
    assert all("MODEL.MODE image" in r[3] for r in rows.values())
    assert {n for n, r in rows.items() if r[4]} == {"M3_w10", "M3_w100"}  # only round 2 adds other worlds
    # The same labelled crops a step in every row: 32 (supervised) = 64 x (1 - 0.5) (Mean Teacher).
    assert all("SOLVER.BATCH_SIZE 32" in r[3] for r in rows.values() if r[1] == "supervised")
    assert all("SOLVER.BATCH_SIZE 64" in r[3] and "UNLABELLED_FRACTION 0.5" in r[3]
               for r in rows.values() if r[1] == "mean_teacher")
    _write(tmp_path, "S1", _summary([0.55] * 3, [0.55] * 3, [0.55] * 3))
    res = g.collect(tmp_path, "image")
    assert res["chosen_on_val"] == {"supervised": "S1", "mean_teacher": "M2"}
    assert "image only" in res["what"]


def test_image_round2_waits_for_round1(tmp_path):
    g = _script()
    _write(tmp_path, "M1", _summary([0.6] * 3, [0.6] * 3, [0.6] * 3))
    with pytest.raises(ValueError, match="M2 has not finished"):
        g.image_round2(tmp_path)
