"""The demo's tile split: a larger val region (it calibrates the score threshold) and the same
held-out test region as the default split, on the demo's default study area."""
from __future__ import annotations

from etl.commands import demo
from etl.tiling import region_layout


def _demo_layout(fractions):
    args = demo.build_parser().parse_args([])
    # build_dataset's default region size on the demo's mosaic: twice the tile, at most a quarter side.
    region = min(2 * args.tile_size, max(args.tile_size, args.size // 4))
    return region_layout(args.size, args.size, region, fractions, seed=0)


def test_demo_split_grows_val_and_keeps_the_test_region():
    default = _demo_layout((0.7, 0.15, 0.15))
    ours = _demo_layout(demo.DEMO_SPLIT_FRACTIONS)
    regions = lambda layout, split: {i for i, s in enumerate(layout.split_of) if s == split}  # noqa: E731
    assert regions(ours, "test") == regions(default, "test") and regions(ours, "test")
    assert len(regions(ours, "val")) >= len(regions(default, "val")) + 2
    # Every region has one split; train keeps most of the area.
    assert set(ours.split_of) == {"train", "val", "test"}
    assert len(regions(ours, "train")) > len(ours.split_of) // 2


def test_demo_default_config_records_the_target_precision_threshold():
    from detectron2_rfcn.config import get_rfcn_cfg

    cfg = get_rfcn_cfg(str(demo.DEFAULT_CONFIG), ["MODEL.DEVICE", "cpu"])
    assert cfg.TEST.CRATER_EVAL.CALIBRATION_RULE == "target_precision"
    assert cfg.TEST.CRATER_EVAL.CALIBRATION_SPLIT == "val" and cfg.TEST.CRATER_EVAL.TARGET_PRECISION == 0.9
