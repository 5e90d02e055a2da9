"""Test-time augmentation (detectron2_rfcn.tta): every view's boxes come back to the tile's own
pixels, and the views' craters merge into one crater each, scored by the mean over views."""
from __future__ import annotations

import numpy as np
import pytest

from detectron2_rfcn.tta import TRANSFORMS, apply_view, boxes_to_original, merge_views, predict_views


def _blobs(height: int, width: int, boxes) -> np.ndarray:
    img = np.zeros((2, height, width), dtype=np.float32)
    for x0, y0, x1, y1 in boxes:
        img[:, y0:y1, x0:x1] = 1.0
    return img


def _bright_boxes(channels: np.ndarray) -> np.ndarray:
    """A stand-in detector: the bounding box of each bright rectangle of channel 0 (labelled)."""
    from scipy import ndimage

    labels, n = ndimage.label(channels[0] > 0.5)
    out = []
    for sl in ndimage.find_objects(labels):
        out.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
    return np.asarray(out, dtype=float).reshape(-1, 4)


def test_the_eight_views_are_distinct_and_exact():
    img = _blobs(40, 64, [(20, 5, 31, 12)])
    seen = {apply_view(img, name).tobytes() for name in TRANSFORMS}
    assert len(seen) == 8
    assert np.array_equal(apply_view(img, "hflip"), img[:, :, ::-1])
    assert np.array_equal(apply_view(img, "vflip"), img[:, ::-1, :])
    assert np.array_equal(apply_view(img, "transpose"), img.transpose(0, 2, 1))
    assert np.array_equal(apply_view(img, "rot180"), img[:, ::-1, ::-1])


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_boxes_found_in_a_view_come_back_to_the_tile(name):
    # Not square, and the blobs off-centre, so that any mix-up of axes or turns shows.
    truth = np.array([[20, 5, 31, 12], [2, 25, 9, 39], [50, 30, 63, 38]], dtype=float)
    img = _blobs(40, 64, truth.astype(int))
    back = boxes_to_original(_bright_boxes(apply_view(img, name)), name, 40, 64)
    back = back[np.lexsort((back[:, 1], back[:, 0]))]
    assert np.allclose(back, truth[np.lexsort((truth[:, 1], truth[:, 0]))])


def test_views_of_one_crater_merge_into_one_with_the_mean_score():
    a = (np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([0.9]))
    b = (np.array([[11.0, 10.0, 31.0, 30.0], [60.0, 60.0, 70.0, 70.0]]), np.array([0.7, 0.4]))
    c = (np.zeros((0, 4)), np.zeros(0))
    boxes, scores = merge_views([a, b, c])
    # The crater seen twice: (0.9 + 0.7) / 3; the one seen once: 0.4 / 3.
    assert np.allclose(scores, [1.6 / 3, 0.4 / 3])
    assert np.allclose(boxes[0], [(10 * 0.9 + 11 * 0.7) / 1.6, 10, (30 * 0.9 + 31 * 0.7) / 1.6, 30])
    assert np.allclose(boxes[1], [60, 60, 70, 70])


def test_a_view_counts_once_per_crater():
    # Two boxes of one view that both match the crater: only the better one is averaged.
    v1 = (np.array([[10.0, 10.0, 30.0, 30.0], [12.0, 10.0, 32.0, 30.0]]), np.array([0.8, 0.6]))
    v2 = (np.array([[10.0, 10.0, 30.0, 30.0]]), np.array([0.4]))
    boxes, scores = merge_views([v1, v2])
    assert len(scores) == 1 and scores[0] == pytest.approx((0.8 + 0.4) / 2)


def test_predict_views_of_a_symmetric_detector_gives_the_detector_back():
    truth = np.array([[20, 5, 31, 12], [2, 25, 9, 39]], dtype=float)
    img = _blobs(40, 64, truth.astype(int))

    def predict_many(images):
        return [(_bright_boxes(im), np.full(len(_bright_boxes(im)), 0.8)) for im in images]

    (boxes, scores), = predict_views(predict_many, [img], ["hflip", "vflip", "rot90"])
    assert np.allclose(scores, 0.8)
    assert np.allclose(boxes[np.argsort(boxes[:, 0])], truth[np.argsort(truth[:, 0])])
    with pytest.raises(ValueError, match="unknown TTA views"):
        predict_views(predict_many, [img], ["mirror"])


def test_crater_predictor_reads_its_views_from_the_config():
    import torch

    from detectron2_rfcn.atlas import CraterPredictor
    from detectron2_rfcn.config import get_rfcn_cfg

    cfg = get_rfcn_cfg()
    assert list(cfg.TEST.CRATER_TTA.TRANSFORMS) == []

    class Fixed(torch.nn.Module):
        def forward(self, inputs):
            from detectron2.structures import Boxes, Instances

            out = []
            for x in inputs:
                inst = Instances((x["height"], x["width"]))
                inst.pred_boxes = Boxes(torch.tensor([[1.0, 2.0, 5.0, 6.0]]))
                inst.scores = torch.tensor([0.6])
                out.append({"instances": inst})
            return out

    img = np.zeros((3, 16, 24), dtype=np.float32)
    boxes, scores = CraterPredictor(Fixed())(img)
    assert np.allclose(boxes, [[1, 2, 5, 6]]) and np.allclose(scores, [0.6])
    # A model blind to the view finds the box at the same place in every view: back in the
    # tile these are different places, so each view's crater is its own, scored 0.6 / 2.
    boxes, scores = CraterPredictor(Fixed(), tta=["hflip"])(img)
    assert np.allclose(np.sort(scores), [0.3, 0.3])
    assert np.allclose(boxes[np.argsort(boxes[:, 0])], [[1, 2, 5, 6], [19, 2, 23, 6]])
    with pytest.raises(ValueError, match="unknown TTA views"):
        CraterPredictor(Fixed(), tta=["sideways"])
