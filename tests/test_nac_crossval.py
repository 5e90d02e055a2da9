"""benchmarks/nac_crossval.py: per-fold summaries combined into one mean +- std over folds."""
from __future__ import annotations

import json
import math

import pytest

from script_loader import load_script


def _script():
    return load_script("benchmarks/nac_crossval.py")


def _fold(ap50: float, best_f1: float, weights: str = "model_final.pth", **more) -> dict:
    return {"config": "configs/NAC-Transfer/rfcn_timm_R_18_DC4_600it.yaml", "weights": weights,
            "test_AP50": ap50, "test_best_f1": best_f1, "test_precision": 60.0, "test_recall": 70.0,
            "test_f1": 64.6, "score_thresh": 0.6, "test_recall_8to16px": 75.0, **more}


def test_folds_from_several_summaries_give_mean_and_sample_std():
    m = _script()
    combined = m.combine_folds([{"2": _fold(40.0, 70.0, test_recall_16to32px=50.0)},
                                {"0": _fold(45.0, 71.0, test_recall_16to32px=60.0), "1": _fold(50.0, 75.0)}])
    assert list(combined["folds"]) == ["0", "1", "2"] and combined["n_folds"] == 3
    assert combined["mean"]["test_AP50"] == pytest.approx(45.0)
    assert combined["std"]["test_AP50"] == pytest.approx(5.0)  # deviations -5, 0, 5: sqrt(50 / 2)
    assert combined["mean"]["test_best_f1"] == pytest.approx(72.0)
    assert combined["std"]["test_best_f1"] == pytest.approx(math.sqrt((4 + 1 + 9) / 2))  # deviations -2, -1, 3
    # a column that one fold lacks is not averaged over the others
    assert "test_recall_16to32px" not in combined["mean"]
    table = m.format_table(combined)
    assert "mean" in table and "45.0 +- 5.0" in table and "recall_16to32px" not in table


def test_folds_scored_at_different_checkpoints_or_given_twice_are_refused():
    m = _script()
    with pytest.raises(ValueError, match="weights"):
        m.combine_folds([{"0": _fold(45.0, 71.0)}, {"1": _fold(24.0, 67.0, weights="model_0000299.pth")}])
    with pytest.raises(ValueError, match="config"):
        m.combine_folds([{"0": _fold(45.0, 71.0)}, {"1": _fold(45.0, 71.0, config="configs/other.yaml")}])
    with pytest.raises(ValueError, match="twice"):
        m.combine_folds([{"0": _fold(45.0, 71.0)}, {"0": _fold(46.0, 72.0)}])


def test_combine_on_the_command_line_writes_the_summary(tmp_path, capsys):
    m = _script()
    paths = []
    for k, (ap50, f1) in enumerate([(45.0, 71.0), (47.0, 73.0)]):
        paths.append(tmp_path / f"fold{k}.json")
        paths[-1].write_text(json.dumps({str(k): _fold(ap50, f1)}))
    out = tmp_path / "mean.json"
    assert m.main(["--combine", *map(str, paths), "--out", str(out)]) == 0
    combined = json.loads(out.read_text())
    assert combined["mean"]["test_AP50"] == pytest.approx(46.0)
    assert combined["std"]["test_AP50"] == pytest.approx(math.sqrt(2.0))
    assert "72.0 +- 1.4" in capsys.readouterr().out
