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
