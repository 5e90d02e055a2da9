"""Test-time augmentation of a tile: the model sees the tile flipped and turned, and the craters
of all views are merged crater by crater.

Which views are fair: training already flips tiles and turns them by multiples of 90 degrees
(``INPUT.CRATER.HFLIP_PROB``, ``VFLIP_PROB``, ``ROT90``), and a LOLA model re-lights its
hillshade from a random sun azimuth (``INPUT.CRATER.RANDOM_SUN_AZIMUTH``), so a flipped or
turned tile (whose hillshade is lit from a mirrored or turned sun) is a view the model was
trained on. The views are the 8 symmetries of the square pixel grid, exact (no resampling),
named in ``TRANSFORMS``; the identity is always one of them.

The merge (:func:`merge_views`) follows the atlas's crater-aware rule (``etl.matching``, in
pixels): detections of all views in decreasing score; each one not yet taken opens a crater and
takes the detections that match it, at most one per view (a view's other matches are
duplicates, dropped as the atlas merge would drop them). The crater's score is the mean of its
views' scores, 0 for a view that did not find it (a crater seen in one view of four keeps a
quarter of its score), and its box is the score-weighted mean of its views' boxes.

Scores change scale with the number of views: a threshold calibrated without TTA is not the
threshold with it; choose it on validation data made the same way (``benchmarks/eval_lola.py``
picks it on the val atlas).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from etl.matching import PROJECT_RULE, MatchRule

__all__ = ["TRANSFORMS", "apply_view", "boxes_to_original", "merge_views", "predict_views"]

#: The symmetries of the pixel grid: name -> (number of quarter turns counter-clockwise as
#: numpy.rot90 makes them, then a flip of the columns).
TRANSFORMS: dict[str, tuple[int, bool]] = {
    "identity": (0, False), "rot90": (1, False), "rot180": (2, False), "rot270": (3, False),
    "hflip": (0, True), "vflip": (2, True), "transpose": (3, True), "antitranspose": (1, True),
}


def apply_view(channels: np.ndarray, name: str) -> np.ndarray:
    """``channels`` (C, H, W) seen through the view ``name`` (a copy, C-contiguous)."""
    turns, flip = TRANSFORMS[name]
    out = np.rot90(channels, k=turns, axes=(1, 2))
    if flip:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def boxes_to_original(boxes: np.ndarray, name: str, height: int, width: int) -> np.ndarray:
    """XYXY boxes found in the view ``name`` of an image of ``height`` x ``width`` px, in the
    original image's pixels (continuous coordinates: pixel edges at integers)."""
    b = np.asarray(boxes, dtype=float).reshape(-1, 4).copy()
    turns, flip = TRANSFORMS[name]
    # The view's shape: a quarter turn swaps height and width.
    vw = height if turns % 2 else width
    if flip:
        b[:, [0, 2]] = vw - b[:, [2, 0]]
    # Undo ``turns`` quarter turns counter-clockwise, one at a time. numpy.rot90 (axes (1, 2))
    # maps an original point (x, y) of an image of width w to (y, w - x); so a point (x', y') of
    # the turned image came from (w - y', x').
    h, w = height, width
    for k in range(turns, 0, -1):
        # The image before this turn: turned k - 1 times; its width is w if k - 1 is even.
        prev_w = w if (k - 1) % 2 == 0 else h
        x0, y0, x1, y1 = b.T.copy()
        b = np.stack([prev_w - y1, x0, prev_w - y0, x1], axis=1)
    return b


def merge_views(views: Sequence[tuple[np.ndarray, np.ndarray]], rule: MatchRule = PROJECT_RULE
                ) -> tuple[np.ndarray, np.ndarray]:
    """One box and score per crater from every view's (boxes XYXY px in the original image,
    scores) (module docstring). Boxes in decreasing score."""
    n_views = len(views)
    if n_views == 0:
        return np.zeros((0, 4)), np.zeros(0)
    boxes = np.concatenate([np.asarray(b, dtype=float).reshape(-1, 4) for b, _ in views])
    scores = np.concatenate([np.asarray(s, dtype=float).reshape(-1) for _, s in views])
    view = np.concatenate([np.full(len(s), i) for i, (_, s) in enumerate(views)])
    if len(boxes) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    order = np.argsort(-scores, kind="stable")
    boxes, scores, view = boxes[order], scores[order], view[order]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    diam = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
    taken = np.zeros(len(boxes), dtype=bool)
    out_boxes, out_scores = [], []
    for i in range(len(boxes)):
        if taken[i]:
            continue
        cand = np.flatnonzero(~taken)
        ok = rule.is_match_distance(np.hypot(cx[cand] - cx[i], cy[cand] - cy[i]), diam[i], diam[cand])
        members = cand[ok]
        taken[members] = True
        # The best-scoring match of each view (members are in decreasing score, i first).
        _, first = np.unique(view[members], return_index=True)
        members = members[first]
        w = scores[members]
        out_boxes.append((boxes[members] * w[:, None]).sum(0) / w.sum())
        out_scores.append(w.sum() / n_views)
    out_boxes, out_scores = np.array(out_boxes), np.array(out_scores)
    rank = np.argsort(-out_scores, kind="stable")
    return out_boxes[rank], out_scores[rank]


def predict_views(predict_many: Callable[[list[np.ndarray]], list[tuple[np.ndarray, np.ndarray]]],
                  channels_list: Sequence[np.ndarray], names: Sequence[str], rule: MatchRule = PROJECT_RULE
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each image of ``channels_list`` seen through the identity and the views ``names``, merged
    (:func:`merge_views`). ``predict_many(images) -> [(boxes, scores)]`` runs the model on images
    of one shape (one batch per view)."""
    names = ["identity"] + [n for n in names if n != "identity"]
    unknown = [n for n in names if n not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown TTA views {unknown}: choose from {sorted(TRANSFORMS)}")
    per_image: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in channels_list]
    for name in names:
        results = predict_many([apply_view(c, name) for c in channels_list])
        for i, (c, (b, s)) in enumerate(zip(channels_list, results)):
            per_image[i].append((boxes_to_original(b, name, c.shape[1], c.shape[2]), np.asarray(s, dtype=float)))
    return [merge_views(views, rule) for views in per_image]
