"""CraterEvaluator on hand-made cases: every number below is worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detectron2.structures import Boxes, BoxMode, Instances
from detectron2_rfcn import CraterEvaluator, match_craters
from detectron2_rfcn.evaluator import precision_recall_curve, target_precision_threshold
from etl.matching import MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO


def _gt(image_id, boxes_xyxy, truncated=None):
    truncated = truncated or [False] * len(boxes_xyxy)
    return {"image_id": image_id, "height": 200, "width": 200, "annotations": [
        {"bbox": BoxMode.convert(list(b), BoxMode.XYXY_ABS, BoxMode.XYWH_ABS), "bbox_mode": BoxMode.XYWH_ABS,
         "category_id": 0, "iscrowd": 0, "truncated": t} for b, t in zip(boxes_xyxy, truncated)]}


def _out(boxes_xyxy, scores):
    inst = Instances((200, 200))
    inst.pred_boxes = Boxes(torch.tensor(boxes_xyxy, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.long)
    return {"instances": inst}


def _evaluate(gts, outs, **kw):
    ev = CraterEvaluator("hand", dataset_dicts=gts, distributed=False, coco_ap=kw.pop("coco_ap", False), **kw)
    ev.reset()
    ev.process([{"image_id": g["image_id"]} for g in gts], outs)
    return ev.evaluate()


def test_rule_defaults_are_the_projects():
    ev = CraterEvaluator("hand", dataset_dicts=[], distributed=False)
    assert ev.max_centre_distance_frac == MATCH_MAX_CENTRE_DISTANCE_FRAC
    assert ev.max_diameter_ratio == MATCH_MAX_DIAMETER_RATIO


def test_match_rule_edges():
    gt = np.array([[0.0, 0.0, 20.0, 20.0]])  # centre (10, 10), D 20
    # Centre 10 px away, D 20: distance = 0.5 x larger diameter -> match (boundary included).
    assert match_craters(np.array([[10.0, 0.0, 30.0, 20.0]]), [1.0], gt).tolist() == [0]
    # 10.5 px away -> no match.
    assert match_craters(np.array([[10.5, 0.0, 30.5, 20.0]]), [1.0], gt).tolist() == [-1]
    # Same centre, D 30 (ratio 1.5) -> match; D 31 -> no match.
    assert match_craters(np.array([[-5.0, -5.0, 25.0, 25.0]]), [1.0], gt).tolist() == [0]
    assert match_craters(np.array([[-5.5, -5.5, 25.5, 25.5]]), [1.0], gt).tolist() == [-1]
    # One-to-one: two detections on one crater -> the higher score wins, the other is unmatched.
    two = np.array([[1.0, 1.0, 21.0, 21.0], [0.0, 0.0, 20.0, 20.0]])
    assert match_craters(two, [0.3, 0.9], gt).tolist() == [-1, 0]


def test_precision_recall_f1_and_errors():
    gts = [_gt(1, [[0, 0, 20, 20], [100, 100, 140, 140], [50, 50, 80, 80]]),
           _gt(2, [[10, 10, 50, 50]])]
    outs = [
        # TP (D 22 vs 20, centre off by 1 px), FP far away, TP on the 40 px crater (exact), low-score TP.
        _out([[1, 0, 23, 22], [150, 0, 170, 20], [100, 100, 140, 140], [50, 50, 80, 80]], [0.9, 0.8, 0.7, 0.3]),
        _out([], []),
    ]
    res = _evaluate(gts, outs, score_thresh=0.5, diameter_bins_px=[10, 25, 60])["craters"]
    # At 0.5: 3 detections, 2 true -> P = 2/3; 4 craters, 2 found -> R = 1/2.
    assert res["num_gt"] == 4 and res["num_detections"] == 3
    assert res["precision"] == pytest.approx(100 * 2 / 3)
    assert res["recall"] == pytest.approx(50.0)
    assert res["f1"] == pytest.approx(100 * 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    # Whole curve: after 4 detections P = 3/4, R = 3/4 -> best F1 0.75 at score 0.3.
    assert res["best_f1"] == pytest.approx(75.0)
    assert res["best_f1_score_thresh"] == pytest.approx(0.3)
    # Precision >= 0.9 only after the first detection: R = 1/4, at score 0.9.
    assert res["recall_at_precision_0.9"] == pytest.approx(25.0)
    assert res["target_precision_score_thresh"] == pytest.approx(0.9)
    # Matches above 0.5: |22 - 20| / 20 = 0.1 and 0; median 0.05. Centres: (12, 11) vs (10, 10).
    assert res["median_diameter_error_frac"] == pytest.approx(0.05)
    assert res["median_centre_error_frac"] == pytest.approx((math.hypot(2, 1) / 20 + 0) / 2)
    # Bins [10, 25): craters D 20 (found) -> recall 100; [25, 60): D 40 (found), 30, 40 (missed) -> 1/3.
    assert res["recall_10to25px"] == pytest.approx(100.0)
    assert res["recall_25to60px"] == pytest.approx(100 / 3)
    assert res["num_gt_25to60px"] == 3
    # Precision by detected diameter: [10, 25) holds the TP (D 22) and the FP (D 20) -> 50.
    assert res["precision_10to25px"] == pytest.approx(50.0)


def test_ignored_craters_are_neither_hits_nor_misses():
    # A truncated crater and a 6 px crater (below the 10 px minimum), both detected, one real miss.
    gts = [_gt(1, [[0, 0, 30, 30], [100, 100, 106, 106], [150, 150, 180, 180]], truncated=[True, False, False])]
    outs = [_out([[0, 0, 30, 30], [100, 100, 106, 106], [60, 60, 64, 64]], [0.9, 0.9, 0.9])]
    res = _evaluate(gts, outs)["craters"]
    # The 4 px false detection is below the minimum too: nothing counted but the missed crater.
    assert res["num_gt"] == 1 and res["num_detections"] == 0 and res["recall"] == 0.0


def test_perfect_detections_give_full_coco_ap():
    boxes = [[0, 0, 20, 20], [100, 100, 140, 140]]
    res = _evaluate([_gt(1, boxes)], [_out(boxes, [0.9, 0.8])], coco_ap=True)
    assert res["craters"]["precision"] == 100.0 and res["craters"]["recall"] == 100.0
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["bbox"]["AP50"] == pytest.approx(100.0)


def test_diameter_bias_and_the_ratio_at_the_best_threshold():
    # Three craters of D 20 / 40 / 30 px, detected 10 % / 30 % too large (same centres) and one
    # exact low-score detection; a far false positive.
    gts = [_gt(1, [[0, 0, 20, 20], [100, 100, 140, 140], [50, 50, 80, 80]])]
    outs = [_out([[-1, -1, 21, 21], [94, 94, 146, 146], [50, 50, 80, 80], [160, 0, 180, 20]],
                 [0.9, 0.8, 0.3, 0.2])]
    res = _evaluate(gts, outs, score_thresh=0.5)["craters"]
    # Above 0.5: biases +0.1 and +0.3 -> median +0.2 (signed), like the absolute error here.
    assert res["median_diameter_bias_frac"] == pytest.approx(0.2)
    assert res["median_diameter_error_frac"] == pytest.approx(0.2)
    # Best F1 at score 0.3 (3 TPs of 3 craters, P 1.0): ratios 20/22, 40/52, 30/30 -> median 20/22.
    assert res["best_f1_score_thresh"] == pytest.approx(0.3)
    assert res["diameter_ratio_at_best_f1"] == pytest.approx(20 / 22)


def _threshold_rules(scores, is_tp, num_gt, target=0.9):
    """(best-F1 threshold, target-precision threshold) and a function: threshold -> (P, R)."""
    s, p, r = precision_recall_curve(np.asarray(scores, dtype=float), np.asarray(is_tp, dtype=bool), num_gt)
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)

    def at(th):
        kept = np.asarray(scores) >= th
        n_tp = int(np.asarray(is_tp)[kept].sum())
        return n_tp / kept.sum(), n_tp / num_gt

    return float(s[np.argmax(f1)]), target_precision_threshold(s, p, target), at


def test_target_precision_threshold_keeps_the_precision_that_best_f1_gives_away():
    # 20 craters; 12 found at 0.95-0.84 without a false one, then 3 false at 0.80-0.78, then
    # 6 true and 6 false alternating from 0.70 down (a weak tail), 2 craters never found.
    scores = [0.95 - 0.01 * i for i in range(12)] + [0.80, 0.79, 0.78] + [0.70 - 0.02 * i for i in range(12)]
    is_tp = [True] * 12 + [False] * 3 + [True, False] * 6
    best_f1, target, at = _threshold_rules(scores, is_tp, 20)
    # Best F1: 18 TP of 26 detections at 0.50 (P 0.69, R 0.9, F1 0.78) beats 12 of 12 (R 0.6,
    # F1 0.75): the best-F1 threshold's atlas is almost one third false.
    assert best_f1 == pytest.approx(0.50)
    assert at(best_f1) == pytest.approx((18 / 26, 0.9))
    # Precision >= 0.9 holds down to 0.80 (12 / 13); below, never again (12 / 14, 13 / 16, ...).
    assert target == pytest.approx(0.80)
    assert at(target) == pytest.approx((12 / 13, 0.6))


def test_target_precision_threshold_takes_the_lowest_threshold_that_meets_the_target():
    # 10 craters: 8 TP, 1 FP, 1 TP, 1 FP: P after each: ..., 8/9, 9/10, 9/11. Best F1 = 0.9 at
    # score 0.5; the lowest threshold with P >= 0.9 is 0.5 too, not the first (8 / 8) at 0.6.
    scores = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45]
    is_tp = [True] * 8 + [False, True, False]
    best_f1, target, at = _threshold_rules(scores, is_tp, 10)
    assert target == pytest.approx(0.5) and at(target) == pytest.approx((0.9, 0.9))
    # A false detection with the same score as the last true one: a threshold keeps both, P 9/11.
    tied = scores[:-1] + [0.5]
    _, target, at = _threshold_rules(tied, is_tp, 10)
    assert target == pytest.approx(0.6) and at(target) == pytest.approx((1.0, 0.8))
    # Never precise enough: NaN (the engine falls back to best F1).
    _, target, _ = _threshold_rules([0.9, 0.8], [False, True], 2)
    assert target != target
