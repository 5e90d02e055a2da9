#!/usr/bin/env python
"""Age-net throughput: crater crops per second (extraction, training) and the cost of a
Mean-Teacher step against a supervised step, measured side by side in one run.

Both steps process the same number of crops (SOLVER.BATCH_SIZE) through the same student:
the supervised step all labelled, the Mean-Teacher step half labelled and half unlabelled,
each crater in two noisy views, plus a teacher forward pass and the EMA update. Steps
alternate (supervised, Mean Teacher, supervised, ...) so that a busy shared CPU slows both
alike; medians are reported. Goal (issue 10): Mean-Teacher step <= 1.6 x supervised step.

    python benchmarks/bench_age_net.py                      # a synthetic world is generated in a temp dir
    python benchmarks/bench_age_net.py --world data/world --size 64 --steps 30 --out benchmarks/results/x.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from age_net.config import attribute_size_px, get_age_cfg  # noqa: E402
from age_net.data import build_crater_set, unit_source  # noqa: E402
from age_net.engine import AgeTrainer, make_split  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", type=Path, default=None, help="synthetic world dir (default: generate one, 2048 px)")
    p.add_argument("--config-file", default=str(REPO / "configs" / "age_net" / "agenet_R18_S32_cpu.yaml"))
    p.add_argument("--size", type=int, default=None, help="crop side S, px (default: the config's)")
    p.add_argument("--batch", type=int, default=None, help="crops per step (default: the config's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps of each kind (after 3 warm-up steps)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "age_net_cpu.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    opts = ["MODEL.DEVICE", args.device]
    if args.size:
        opts += ["INPUT.SIZE_PX", str(args.size)]
    if args.batch:
        opts += ["SOLVER.BATCH_SIZE", str(args.batch)]
    cfg = get_age_cfg(args.config_file, opts + ["DATA.LABEL_FRACTION", "0.5"])
    with tempfile.TemporaryDirectory() as tmp:
        world = args.world
        if world is None:
            from etl.synthetic import generate_world

            world = Path(tmp) / "world"
            generate_world(world, size_px=2048, seed=0)
        cat = pd.read_csv(world / "catalogue.csv")
        t0 = time.perf_counter()
        cs = build_crater_set(cat, dom_path=world / "dom.tif", dem_path=world / "dem.tif", units=unit_source(world),
                              size_px=cfg.INPUT.SIZE_PX, side_diameters=cfg.INPUT.SIDE_DIAMETERS,
                              attribute_size_px=attribute_size_px(cfg))
        extract_s = time.perf_counter() - t0
    split = make_split(cs, cfg, seed=0)
    sup_cfg = cfg.clone()
    sup_cfg.MEAN_TEACHER.ENABLED = False
    mt_cfg = cfg.clone()
    mt_cfg.MEAN_TEACHER.ENABLED = True
    sup = AgeTrainer(sup_cfg, cs, split, None, seed=0, progress=False)
    mt = AgeTrainer(mt_cfg, cs, split, None, seed=0, progress=False)
    times: dict[str, list[float]] = {"supervised": [], "mean_teacher": []}
    sync = torch.cuda.synchronize if sup.device.type == "cuda" else (lambda: None)
    for i in range(args.steps + 3):
        for name, trainer in (("supervised", sup), ("mean_teacher", mt)):
            sync()
            t = time.perf_counter()
            trainer.step()
            sync()
            if i >= 3:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    batch = int(cfg.SOLVER.BATCH_SIZE)
    result = {
        "what": "age net: crops/s in extraction and training; Mean-Teacher step vs supervised step (same crops)",
        "model": f"{cfg.MODEL.TRUNK} + attribute MLP, {len(cfg.MODEL.IMAGE_CHANNELS)} channels",
        "crop_size_px": int(cfg.INPUT.SIZE_PX), "batch_crops": batch, "timed_steps": args.steps,
        "craters": len(cs), "attributes": int(cs.attributes.shape[1]),
        "extraction_crops_per_s": len(cs) / extract_s, "extraction_s": extract_s,
        "supervised_step_s": med["supervised"], "mean_teacher_step_s": med["mean_teacher"],
        "training_crops_per_s_supervised": batch / med["supervised"],
        "training_crops_per_s_mean_teacher": batch / med["mean_teacher"],
        "mean_teacher_over_supervised": med["mean_teacher"] / med["supervised"], "goal_ratio": 1.6,
        "device": str(sup.device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(), "platform": platform.platform(), "torch": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"crop extraction: {result['extraction_crops_per_s']:.0f} craters/s (crops + attributes, S = "
          f"{cfg.INPUT.SIZE_PX})")
    print(f"training, {batch} crops per step: supervised {med['supervised']:.3f} s "
          f"({result['training_crops_per_s_supervised']:.0f} crops/s), Mean Teacher {med['mean_teacher']:.3f} s "
          f"({result['training_crops_per_s_mean_teacher']:.0f} crops/s)")
    print(f"Mean Teacher / supervised: {result['mean_teacher_over_supervised']:.2f}x (goal <= 1.6x)  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
