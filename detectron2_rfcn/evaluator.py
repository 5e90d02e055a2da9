"""``CraterEvaluator``: precision / recall / F1 of crater detections, by diameter, plus COCO AP.

Matching rule (the project's one rule, ``etl.matching``, applied in tile pixels): a
detection and a ground-truth crater match when their centres are at most
``max_centre_distance_frac`` x the larger diameter apart and the larger diameter is at most
``max_diameter_ratio`` x the smaller. A box's diameter is the mean of its width and height
(boxes of projected craters may be wider than tall). Matching is greedy and one-to-one:
detections in descending score, each to the unmatched crater with the smallest centre
distance. Because of that order, the matches among detections scoring >= t are the same for
every t, so one pass gives the whole precision/recall curve.

Ignored (neither a miss nor a false positive): ground truth smaller than
``min_diameter_px``, truncated (cut by the tile edge) or crowd; a detection matched to an
ignored crater; an unmatched detection smaller than ``min_diameter_px``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import itertools
import logging
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from etl.matching import MATCH_MAX_CENTRE_DISTANCE_FRAC, MATCH_MAX_DIAMETER_RATIO

__all__ = ["CraterEvaluator", "match_craters", "precision_recall_curve", "target_precision_threshold"]

logger = logging.getLogger(__name__)


def _centres_diameters(boxes_xyxy: np.ndarray):
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    diameters = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2.0
    return centres, diameters


def match_craters(pred_boxes_xyxy, pred_scores, gt_boxes_xyxy,
                  max_centre_distance_frac: float = MATCH_MAX_CENTRE_DISTANCE_FRAC,
                  max_diameter_ratio: float = MATCH_MAX_DIAMETER_RATIO) -> np.ndarray:
    """Greedy one-to-one matching of one image's detections to its ground truth.

    Returns, for each detection (in the input order), the index of its ground-truth crater,
    or -1."""
    pc, pd = _centres_diameters(pred_boxes_xyxy)
    gc, gd = _centres_diameters(gt_boxes_xyxy)
    matched_gt = np.full(len(pd), -1, dtype=np.int64)
    if len(pd) == 0 or len(gd) == 0:
        return matched_gt
    dist = np.linalg.norm(pc[:, None, :] - gc[None, :, :], axis=2)
    big = np.maximum(pd[:, None], gd[None, :])
    small = np.minimum(pd[:, None], gd[None, :])
    ok = (dist <= max_centre_distance_frac * big) & (big <= max_diameter_ratio * small)
    taken = np.zeros(len(gd), dtype=bool)
    for i in np.argsort(-np.asarray(pred_scores, dtype=np.float64), kind="stable"):
        cand = np.flatnonzero(ok[i] & ~taken)
        if len(cand):
            j = cand[np.argmin(dist[i, cand])]
            matched_gt[i] = j
            taken[j] = True
    return matched_gt


def precision_recall_curve(scores: np.ndarray, is_tp: np.ndarray, num_gt: int):
    """Precision and recall after each detection in descending score (``scores`` sorted the
    same way), for detections that are counted (not ignored)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(is_tp[order])
    fp = np.cumsum(~is_tp[order])
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(num_gt, 1)
    return scores[order], precision, recall


def target_precision_threshold(scores_desc: np.ndarray, precision: np.ndarray, target_precision: float) -> float:
    """The lowest score t at which the detections scoring >= t are still ``target_precision``
    precise (the curve of :func:`precision_recall_curve`); NaN when no t is. Among thresholds that
    meet the target, the lowest has the highest recall: it is the operating point of "recall at
    precision >= target". The best-F1 threshold of a small calibration set often lands where its
    precision is 100 %, giving up recall that the target would allow; this one does not, though it
    is no less noisy (README, "The demo's detector"). Ties: a threshold keeps every detection of
    its score."""
    s = np.asarray(scores_desc, dtype=np.float64)
    p = np.asarray(precision, dtype=np.float64)
    if not len(s):
        return float("nan")
    last_of_score = np.r_[s[1:] < s[:-1], True]
    ok = np.flatnonzero(last_of_score & (p >= target_precision))
    return float(s[ok[-1]]) if len(ok) else float("nan")


class CraterEvaluator(DatasetEvaluator):
    """Crater detection metrics for a registered crater dataset.

    ``evaluate()`` returns ``{"craters": {...}, "bbox": {AP, AP50, ...}}`` where "craters"
    holds precision / recall / F1 at ``score_thresh``, the best F1 over thresholds, recall at
    ``target_precision``, median fractional diameter error and median centre error (both
    relative to the ground-truth diameter), and per-bin recall (by ground-truth diameter) and
    precision (by detected diameter).
    """

    def __init__(self, dataset_name: str, *, max_centre_distance_frac: float = MATCH_MAX_CENTRE_DISTANCE_FRAC,
                 max_diameter_ratio: float = MATCH_MAX_DIAMETER_RATIO, min_diameter_px: float = 10.0,
                 score_thresh: float = 0.5, target_precision: float = 0.9,
                 diameter_bins_px: Sequence[float] = (10.0, 20.0, 40.0, 80.0, 160.0), coco_ap: bool = True,
                 distributed: bool = True, dataset_dicts: Optional[List[dict]] = None):
        self.dataset_name = dataset_name
        self.max_centre_distance_frac = max_centre_distance_frac
        self.max_diameter_ratio = max_diameter_ratio
        self.min_diameter_px = min_diameter_px
        self.score_thresh = score_thresh
        self.target_precision = target_precision
        self.diameter_bins_px = list(diameter_bins_px)
        self.coco_ap = coco_ap
        self._distributed = distributed
        self._dataset_dicts = dataset_dicts
        self._gt_by_image: Optional[Dict] = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, **kwargs) -> "CraterEvaluator":
        c = cfg.TEST.CRATER_EVAL
        return cls(
            dataset_name,
            max_centre_distance_frac=c.MAX_CENTRE_DISTANCE_FRAC if c.MAX_CENTRE_DISTANCE_FRAC > 0
            else MATCH_MAX_CENTRE_DISTANCE_FRAC,
            max_diameter_ratio=c.MAX_DIAMETER_RATIO if c.MAX_DIAMETER_RATIO > 0 else MATCH_MAX_DIAMETER_RATIO,
            min_diameter_px=c.MIN_DIAMETER_PX,
            # A calibrated model is judged at its own threshold (config.py, CALIBRATED_SCORE_THRESH).
            score_thresh=(cfg.MODEL.RFCN.CALIBRATED_SCORE_THRESH if cfg.MODEL.RFCN.CALIBRATED_SCORE_THRESH >= 0
                          else c.SCORE_THRESH),
            target_precision=c.TARGET_PRECISION,
            diameter_bins_px=c.DIAMETER_BINS_PX,
            coco_ap=c.COCO_AP,
            **kwargs,
        )

    def reset(self):
        self._predictions: List[dict] = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")  # release device memory at once
            self._predictions.append({
                "image_id": inp["image_id"],
                "boxes": inst.pred_boxes.tensor.numpy().astype(np.float64),
                "scores": inst.scores.numpy().astype(np.float64),
            })

    # ------------------------------------------------------------------ ground truth
    def _ground_truth(self) -> Dict:
        if self._gt_by_image is None:
            dicts = self._dataset_dicts if self._dataset_dicts is not None else DatasetCatalog.get(self.dataset_name)
            gt = {}
            for d in dicts:
                boxes, ignore = [], []
                for a in d.get("annotations", []):
                    boxes.append(BoxMode.convert(list(a["bbox"]), a.get("bbox_mode", BoxMode.XYWH_ABS),
                                                 BoxMode.XYXY_ABS))
                    ignore.append(bool(a.get("truncated", False)) or bool(a.get("iscrowd", 0)))
                boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
                _, diam = _centres_diameters(boxes)
                ignore = np.asarray(ignore, dtype=bool) | (diam < self.min_diameter_px)
                gt[d["image_id"]] = {"boxes": boxes, "ignore": ignore, "diameters_px": diam,
                                     "height": d["height"], "width": d["width"]}
            self._gt_by_image = gt
        return self._gt_by_image

    # ------------------------------------------------------------------ metrics
    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if not predictions:
            logger.warning("[CraterEvaluator] no predictions")
            return {}
        results = OrderedDict()
        results["craters"] = self.crater_metrics(predictions)
        logger.info("%s", self.summary(results["craters"]))
        if self.coco_ap:
            results["bbox"] = self.coco_metrics(predictions)
        return copy.deepcopy(results)

    def crater_metrics(self, predictions: List[dict]) -> Dict[str, float]:
        gt = self._ground_truth()
        scores, counted_tp, counted, pred_diam = [], [], [], []
        gt_diam_all, gt_matched_at_thresh = [], []
        diam_err, diam_bias, centre_err = [], [], []
        # True / detected diameter of every matched, counted detection (any score), for the
        # diameter scale at the best-F1 threshold (engine.calibrate_score_threshold).
        match_ratio, match_score = [], []
        for p in predictions:
            g = gt[p["image_id"]]
            match = match_craters(p["boxes"], p["scores"], g["boxes"], self.max_centre_distance_frac,
                                  self.max_diameter_ratio)
            pc, pd = _centres_diameters(p["boxes"])
            gc, gd = _centres_diameters(g["boxes"])
            hit = match >= 0
            hit_ignored = hit & g["ignore"][np.maximum(match, 0)]
            is_counted = ~hit_ignored & ~(~hit & (pd < self.min_diameter_px))
            scores.append(p["scores"])
            counted_tp.append(hit & ~hit_ignored)
            matched = hit & ~hit_ignored
            if matched.any():
                match_ratio.append(gd[match[matched]] / np.maximum(pd[matched], 1e-9))
                match_score.append(p["scores"][matched])
            counted.append(is_counted)
            pred_diam.append(pd)
            # Ground truth found by a detection above the operating threshold.
            found = np.zeros(len(gd), dtype=bool)
            above = hit & (p["scores"] >= self.score_thresh)
            found[match[above]] = True
            keep = ~g["ignore"]
            gt_diam_all.append(gd[keep])
            gt_matched_at_thresh.append(found[keep])
            good = above & ~hit_ignored
            if good.any():
                j = match[good]
                diam_err.append(np.abs(pd[good] - gd[j]) / gd[j])
                diam_bias.append((pd[good] - gd[j]) / gd[j])
                centre_err.append(np.linalg.norm(pc[good] - gc[j], axis=1) / gd[j])

        scores = np.concatenate(scores)
        tp = np.concatenate(counted_tp)
        counted = np.concatenate(counted)
        pred_diam = np.concatenate(pred_diam)
        gt_diam = np.concatenate(gt_diam_all)
        gt_found = np.concatenate(gt_matched_at_thresh)
        num_gt = len(gt_diam)

        s, prec, rec = precision_recall_curve(scores[counted], tp[counted], num_gt)
        f1 = 2 * prec * rec / np.maximum(prec + rec, 1e-12)
        at = counted & (scores >= self.score_thresh)
        n_tp, n_det = int(tp[at].sum()), int(at.sum())
        precision = n_tp / n_det if n_det else 0.0
        recall = n_tp / num_gt if num_gt else 0.0
        res = {
            "num_gt": float(num_gt),
            "num_detections": float(n_det),
            "precision": 100.0 * precision,
            "recall": 100.0 * recall,
            "f1": 100.0 * (2 * precision * recall / (precision + recall) if precision + recall else 0.0),
            "best_f1": 100.0 * float(f1.max()) if len(f1) else 0.0,
            "best_f1_score_thresh": float(s[np.argmax(f1)]) if len(f1) else float("nan"),
            f"recall_at_precision_{self.target_precision:g}":
                100.0 * float(rec[prec >= self.target_precision].max()) if np.any(prec >= self.target_precision) else 0.0,
            "median_diameter_error_frac": float(np.median(np.concatenate(diam_err))) if diam_err else float("nan"),
            # Signed: > 0 when detected craters are too large.
            "median_diameter_bias_frac": float(np.median(np.concatenate(diam_bias))) if diam_bias else float("nan"),
            "median_centre_error_frac": float(np.median(np.concatenate(centre_err))) if centre_err else float("nan"),
        }
        # The lowest score at which the detections scoring at least that are still target_precision
        # precise: the operating point of recall_at_precision (engine.calibrate_score_threshold).
        res["target_precision_score_thresh"] = target_precision_threshold(s, prec, self.target_precision)
        ratio = np.concatenate(match_ratio) if match_ratio else np.zeros(0)
        ratio_score = np.concatenate(match_score) if match_score else np.zeros(0)

        def median_ratio(thresh):
            kept = ratio[ratio_score >= thresh] if thresh == thresh else np.zeros(0)
            return float(np.median(kept)) if len(kept) else float("nan")

        # Median true / detected diameter of the craters matched at either threshold.
        res["diameter_ratio_at_best_f1"] = median_ratio(res["best_f1_score_thresh"])
        res["diameter_ratio_at_target_precision"] = median_ratio(res["target_precision_score_thresh"])
        edges = self.diameter_bins_px + [np.inf]
        for lo, hi in zip(edges[:-1], edges[1:]):
            name = f"{lo:g}to{hi:g}px" if np.isfinite(hi) else f"ge{lo:g}px"
            in_gt = (gt_diam >= lo) & (gt_diam < hi)
            in_det = at & (pred_diam >= lo) & (pred_diam < hi)
            res[f"recall_{name}"] = 100.0 * float(gt_found[in_gt].mean()) if in_gt.any() else float("nan")
            res[f"precision_{name}"] = 100.0 * float(tp[in_det].mean()) if in_det.any() else float("nan")
            res[f"num_gt_{name}"] = float(in_gt.sum())
        return res

    def summary(self, m: Dict[str, float]) -> str:
        """The crater metrics in words, with their units (Detectron2's table prints bare numbers)."""
        target = f"recall_at_precision_{self.target_precision:g}"
        lines = [f"[CraterEvaluator] {self.dataset_name}: {m['num_gt']:.0f} craters >= {self.min_diameter_px:g} px "
                 f"(truncated ones ignored), {m['num_detections']:.0f} detections with score >= {self.score_thresh:.3f}",
                 f"  precision {m['precision']:.1f} %, recall {m['recall']:.1f} %, F1 {m['f1']:.1f} %; best F1 "
                 f"{m['best_f1']:.1f} % at score >= {m['best_f1_score_thresh']:.3f}; recall at precision >= "
                 f"{100 * self.target_precision:g} %: {m[target]:.1f} %",
                 f"  median errors of matched craters, in % of the true diameter: diameter "
                 f"{100 * m['median_diameter_error_frac']:.1f} %, centre {100 * m['median_centre_error_frac']:.1f} %",
                 "  by true (recall) / detected (precision) diameter, px: " + "; ".join(
                     f"{k[len('recall_'):]} R {m[k]:.1f} % P {m['precision_' + k[len('recall_'):]]:.1f} %"
                     for k in m if k.startswith("recall_") and not k.startswith("recall_at"))]
        return "\n".join(lines)

    def coco_metrics(self, predictions: List[dict]) -> Dict[str, float]:
        """COCO AP via pycocotools; truncated and small craters are crowd (ignore) regions there too.
        AP counts every detection of an image (COCO's default of 100 would cap recall on a NAC
        frame of ~1,200 craters)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        gt = self._ground_truth()
        images, annotations = [], []
        for image_id, g in gt.items():
            images.append({"id": image_id, "height": g["height"], "width": g["width"]})
            for b, ign in zip(g["boxes"], g["ignore"]):
                w, h = float(b[2] - b[0]), float(b[3] - b[1])
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h,
                                    "iscrowd": int(ign)})
        dets = [{"image_id": p["image_id"], "category_id": 1, "score": float(sc),
                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                for p in predictions for b, sc in zip(p["boxes"], p["scores"])]
        if not dets or not annotations:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "crater"}]}
        coco_gt.createIndex()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco_dt = coco_gt.loadRes(dets)
            ev = COCOeval(coco_gt, coco_dt, "bbox")
            ev.params.imgIds = sorted({p["image_id"] for p in predictions})
            most = max(len(p["scores"]) for p in predictions)
            ev.params.maxDets = [1, 10, max(100, most)]
            ev.evaluate()
            ev.accumulate()
        # COCOeval.summarize() reads AP at maxDets=100 only; read it at our last maxDets instead.
        precision = ev.eval["precision"][..., -1]  # [IoU, recall, class, area]

        def mean_ap(iou=None, area=0):
            p = precision[:, :, :, area] if iou is None else precision[np.flatnonzero(np.isclose(ev.params.iouThrs, iou)), :, :, area]
            return float(100.0 * p[p > -1].mean()) if np.any(p > -1) else float("nan")

        res = {"AP": mean_ap(), "AP50": mean_ap(0.5), "AP75": mean_ap(0.75), "APs": mean_ap(area=1),
               "APm": mean_ap(area=2), "APl": mean_ap(area=3)}
        logger.info("COCO AP (all detections of an image): %s", ", ".join(f"{k} {v:.1f}" for k, v in res.items()))
        return res
