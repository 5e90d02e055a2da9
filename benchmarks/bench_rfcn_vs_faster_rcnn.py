#!/usr/bin/env python
"""R-FCN R-50 against Detectron2's Faster R-CNN R-50-C4: same inputs, same proposal count.

Both models share everything but the second stage: the trunk up to res4, the RPN and its
anchors, the number of proposals per image (test and train) and the number of RoIs per
image in the loss. Faster R-CNN-C4 runs res5 on every RoI (14x14 RoIAlign -> res5);
R-FCN runs a dilated res5 once per image and only pools per RoI. Timings alternate
between the two models, iteration by iteration, so a busy shared CPU slows both alike.

Goals (issue 4): R-FCN inference <= 0.5x Faster R-CNN-C4 per image (paper: ~0.4x), training
step <= 0.7x. Prints the ratios and writes JSON.

    python benchmarks/bench_rfcn_vs_faster_rcnn.py                 # CPU here, GPU if present
    python benchmarks/bench_rfcn_vs_faster_rcnn.py --size 600 --iters 10 --out output/bench.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from detectron2.modeling import build_model  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from detectron2_rfcn import get_rfcn_cfg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_cfgs(args):
    """(R-FCN cfg, Faster R-CNN-C4 cfg), identical except for the second stage."""
    shared = [
        "MODEL.DEVICE", args.device,
        # Random weights: BN (FrozenBN with random weights produces NaNs); no freezing, as from scratch.
        "MODEL.RESNETS.NORM", "BN", "MODEL.BACKBONE.FREEZE_AT", "0",
        "MODEL.RPN.POST_NMS_TOPK_TEST", str(args.proposals), "MODEL.RPN.POST_NMS_TOPK_TRAIN", str(args.proposals),
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", str(args.rois_per_image),
        # Random weights score everything alike: fix the work after the head, not the threshold.
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.DETECTIONS_PER_IMAGE", "100",
    ]
    rfcn = get_rfcn_cfg(str(REPO / "configs" / "rfcn_R_50_C4_1x.yaml"),
                        shared + ["MODEL.RFCN.OHEM", str(args.ohem)])
    frcnn = get_rfcn_cfg(str(REPO / "configs" / "rfcn_R_50_C4_1x.yaml"), shared + [
        "MODEL.META_ARCHITECTURE", "GeneralizedRCNN",
        "MODEL.ROI_HEADS.NAME", "Res5ROIHeads", "MODEL.ROI_HEADS.IN_FEATURES", "['res4']",
        "MODEL.RESNETS.OUT_FEATURES", "['res4']", "MODEL.RESNETS.RES5_DILATION", "1",
    ])
    return rfcn, frcnn


def make_batch(args, g, with_targets: bool):
    batch = []
    for _ in range(args.batch):
        image = torch.rand(3, args.size, args.size, generator=g)
        item = {"image": image, "height": args.size, "width": args.size}
        if with_targets:
            inst = Instances((args.size, args.size))
            xy = torch.rand(args.gt_per_image, 2, generator=g) * (args.size - 64)
            d = 10 + torch.rand(args.gt_per_image, 1, generator=g) * 50
            inst.gt_boxes = Boxes(torch.cat([xy, xy + d], 1))
            inst.gt_classes = torch.zeros(args.gt_per_image, dtype=torch.long)
            item["instances"] = inst
        batch.append(item)
    return batch


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_inference(model, batch, device):
    model.eval()
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        model(batch)
    _sync(device)
    return (time.perf_counter() - t0) / len(batch)


def time_train_step(model, batch, optimizer, device):
    model.train()
    _sync(device)
    t0 = time.perf_counter()
    with EventStorage():
        losses = model(batch)
        loss = sum(losses.values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=320, help="square input size, px")
    p.add_argument("--batch", type=int, default=2, help="images per step")
    p.add_argument("--proposals", type=int, default=300, help="RPN proposals per image (both models)")
    p.add_argument("--rois-per-image", type=int, default=64, help="RoIs per image in the loss (both models)")
    p.add_argument("--gt-per-image", type=int, default=8)
    p.add_argument("--ohem", type=lambda s: s.lower() in ("1", "true", "yes"), default=True,
                   help="R-FCN with OHEM (scores all proposals, back-propagates the hardest)")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per model and mode")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results/rfcn_vs_faster_rcnn.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg_rfcn, cfg_frcnn = make_cfgs(args)
    models = {"rfcn": build_model(cfg_rfcn), "faster_rcnn_c4": build_model(cfg_frcnn)}
    optims = {k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for k, m in models.items()}
    g = torch.Generator().manual_seed(0)
    test_batch = make_batch(args, g, with_targets=False)
    train_batch = [{**b, "image": b["image"].to(args.device)} for b in make_batch(args, g, with_targets=True)]
    test_batch = [{**b, "image": b["image"].to(args.device)} for b in test_batch]

    times = {k: {"inference_s_per_image": [], "train_step_s": []} for k in models}
    for i in range(args.warmup + args.iters):
        for name, model in models.items():  # alternate: both see the same machine load
            t_inf = time_inference(model, test_batch, args.device)
            t_train = time_train_step(model, train_batch, optims[name], args.device)
            if i >= args.warmup:
                times[name]["inference_s_per_image"].append(t_inf)
                times[name]["train_step_s"].append(t_train)
                print(f"[{i - args.warmup + 1}/{args.iters}] {name:15s} inference {t_inf:.3f} s/img, "
                      f"train step {t_train:.3f} s", flush=True)

    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in times.items()}
    ratio_inf = med["rfcn"]["inference_s_per_image"] / med["faster_rcnn_c4"]["inference_s_per_image"]
    ratio_train = med["rfcn"]["train_step_s"] / med["faster_rcnn_c4"]["train_step_s"]
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    result = {
        "device": args.device, "device_name": device_name, "threads": args.threads,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "settings": vars(args),
        "median": med, "all": times,
        "ratio_inference": ratio_inf, "ratio_train_step": ratio_train,
        "goal_inference_ratio": 0.5, "goal_train_step_ratio": 0.7,
        "meets_inference_goal": ratio_inf <= 0.5, "meets_train_goal": ratio_train <= 0.7,
    }
    print(f"R-FCN / Faster R-CNN-C4 on {args.device} ({device_name}), {args.size} px, "
          f"{args.proposals} proposals/img, {args.rois_per_image} RoIs/img in the loss, OHEM={args.ohem}:")
    print(f"  inference  {med['rfcn']['inference_s_per_image']:.3f} vs "
          f"{med['faster_rcnn_c4']['inference_s_per_image']:.3f} s/img -> ratio {ratio_inf:.2f} (goal <= 0.5)")
    print(f"  train step {med['rfcn']['train_step_s']:.3f} vs {med['faster_rcnn_c4']['train_step_s']:.3f} s "
          f"-> ratio {ratio_train:.2f} (goal <= 0.7)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
