"""Training augmentations that respect the physics: scale jitter moves boxes with the pixels;
brightness/contrast change the DOM channel only, never elevation."""
from __future__ import annotations

import numpy as np
import pytest

from detectron2_rfcn.config import get_rfcn_cfg
from detectron2_rfcn.dataset_mapper import (ChannelIntensityTransform, RandomChannelIntensity, ScaleJitter,
                                            build_crater_augmentation)

QUICK = "configs/quick_schedules/rfcn_timm_R_18_instant_test.yaml"


def test_scale_jitter_scales_pixels_and_boxes_alike():
    image = np.zeros((100, 100, 2), np.float32)
    image[40:60, 20:40] = 1.0  # a 20 px square "crater" at x 20..40, y 40..60
    np.random.seed(0)
    t = ScaleJitter(1.5, 1.5).get_transform(image)
    out = t.apply_image(image)
    box = t.apply_box(np.array([[20.0, 40.0, 40.0, 60.0]]))[0]
    assert out.shape == (150, 150, 2)
    assert box.tolist() == pytest.approx([30.0, 60.0, 60.0, 90.0])
    ys, xs = np.nonzero(out[..., 0] > 0.5)
    assert abs(xs.min() - 30) <= 1 and abs(xs.max() + 1 - 60) <= 1 and abs(ys.min() - 60) <= 1


def test_brightness_contrast_touch_the_dom_only():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3)).astype(np.float32)  # dom, dem, slope
    out = ChannelIntensityTransform([0], contrast=1.5, brightness=0.1).apply_image(image)
    assert np.array_equal(out[..., 1:], image[..., 1:])
    assert out[..., 0].std() == pytest.approx(1.5 * image[..., 0].std(), rel=1e-4)
    assert out[..., 0].mean() == pytest.approx(image[..., 0].mean() + 0.1, abs=1e-4)
    assert ChannelIntensityTransform([0], 1.5, 0.1).apply_coords(np.array([[3.0, 4.0]])).tolist() == [[3.0, 4.0]]


def test_augmentations_follow_the_config():
    cfg = get_rfcn_cfg(QUICK)
    assert not any(isinstance(a, (ScaleJitter, RandomChannelIntensity)) for a in build_crater_augmentation(cfg, True))
    cfg.INPUT.CRATER.SCALE_JITTER = (0.8, 1.25)
    cfg.INPUT.CRATER.BRIGHTNESS = 0.2
    cfg.MODEL.RFCN.INPUT_CHANNELS = ["dem", "dom"]
    augs = build_crater_augmentation(cfg, True)
    intensity = [a for a in augs if isinstance(a, RandomChannelIntensity)]
    assert any(isinstance(a, ScaleJitter) for a in augs) and intensity[0].channels == [1]
    assert build_crater_augmentation(cfg, False) == []
    cfg.INPUT.CRATER.SCALE_JITTER = (1.2, 0.8)
    with pytest.raises(ValueError, match="SCALE_JITTER"):
        build_crater_augmentation(cfg, True)
