#!/usr/bin/env python
"""Mean Teacher against supervised training with 10 % of the labels on the synthetic worlds: the grid
of settings (fixed before its results), the commands that train it, and the table it gives.

Each method's setting is chosen on the validation blocks only (mean val accuracy over its grid rows);
the test blocks and the unseen world are then read once, and the two chosen rows are compared trial
by trial (the same seeds, hence the same spatial split and the same labelled craters).

    python benchmarks/age_mean_teacher_grid.py commands --worlds /tmp/ages --runs /tmp/ages/runs   # print them
    python benchmarks/age_mean_teacher_grid.py collect --runs /tmp/ages/runs \\
        --out benchmarks/results/age_synthetic_v5_10pct.json

``--worlds`` holds ``w0`` (trained on), ``w7`` (the unseen world) and ``w1``, ``w2``, ``w3`` (extra
unlabelled craters), each ``deepcraters synth --out DIR/wS --size 2048 --seed S --quiet``.

``--grid image`` is the image-only ablation (ResNet-18 on 32 px DOM + DEM crops, no attributes), where
the supervised baseline at 10 % of the labels is far below its all-labels figure; its Mean Teacher
round 2 depends on round 1's val accuracies alone (``commands --grid image --round2``):

    python benchmarks/age_mean_teacher_grid.py commands --grid image --worlds /tmp/ages_img --runs /tmp/ages_img/runs
    python benchmarks/age_mean_teacher_grid.py commands --grid image --round2 --worlds ... --runs ...
    python benchmarks/age_mean_teacher_grid.py collect --grid image --runs /tmp/ages_img/runs \\
        --out benchmarks/results/age_synthetic_image_10pct_grid.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

SIG = "configs/age_net/agenet_attr_sigma_cpu.yaml"
V4 = "configs/age_net/agenet_R18_S32_cpu.yaml"
MT_V4 = "configs/age_net/agenet_mt_R18_S32_cpu.yaml"
COMMON = "DATA.LABEL_FRACTION 0.1 TRIALS 5"
# Mean Teacher as Tarvainen & Valpola (2017): EMA 0.99 during the ramp-up, 0.999 after; three
# unlabelled crops to each labelled one, so that both methods see 128 labelled crops per step.
MT = ("MEAN_TEACHER.ENABLED True SOLVER.BATCH_SIZE 512 MEAN_TEACHER.UNLABELLED_FRACTION 0.75 "
      "MEAN_TEACHER.CONSISTENCY_WEIGHT 10.0 MEAN_TEACHER.EMA_DECAY 0.99 MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP 0.999")
OTHER_WORLDS = ("w1", "w2", "w3")
V4_SEL = "ATTRIBUTES.USE \"['native_*','strat_*']\""

#: name -> (part, method, config file, options, uses the other worlds' craters). "fixed": the
#: comparison of attribute definitions version 4's chosen settings; "grid" and "round2" compete on val;
#: "reference": all the labels, the most that any use of the unlabelled craters could give back.
GRID = {
    "fixed_sup": ("fixed", "supervised", V4, "MODEL.MODE attributes SOLVER.MAX_ITER 1000 SOLVER.BASE_LR 0.003 "
                  "SOLVER.BATCH_SIZE 128 INPUT.ATTRIBUTE_NOISE_STD 0.05 " + V4_SEL, False),
    "fixed_mt": ("fixed", "mean_teacher", MT_V4, "MODEL.MODE attributes SOLVER.MAX_ITER 1000 SOLVER.BASE_LR 0.003 "
                 "SOLVER.BATCH_SIZE 512 MEAN_TEACHER.UNLABELLED_FRACTION 0.75 INPUT.ATTRIBUTE_NOISE_STD 0.05 "
                 + V4_SEL + " MEAN_TEACHER.RAMPUP_ITERS 400 MEAN_TEACHER.CONSISTENCY_WEIGHT 10.0 "
                 "MEAN_TEACHER.EMA_DECAY 0.99 MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP 0.999", False),
    # The ceiling: every training label, the same splits (a later DATA.LABEL_FRACTION overrides COMMON's).
    "full_labels": ("reference", "supervised", SIG, "DATA.LABEL_FRACTION 1.0", False),
    "S1": ("grid", "supervised", SIG, "SOLVER.MAX_ITER 1000 SOLVER.BATCH_SIZE 128", False),
    "S2": ("grid", "supervised", SIG, "SOLVER.MAX_ITER 3000 SOLVER.BATCH_SIZE 128", False),
    "S3": ("grid", "supervised", SIG, "SOLVER.MAX_ITER 1000 SOLVER.BATCH_SIZE 128 SOLVER.CLASS_BALANCE none", False),
    "S4": ("grid", "supervised", SIG, "SOLVER.MAX_ITER 1000 SOLVER.BATCH_SIZE 128 MODEL.DROPOUT 0.5", False),
    "S5": ("grid", "supervised", SIG, "SOLVER.MAX_ITER 1000 SOLVER.BATCH_SIZE 128 INPUT.ATTRIBUTE_NOISE_STD 0.15",
           False),
    "M1": ("grid", "mean_teacher", SIG, "SOLVER.MAX_ITER 1000 MEAN_TEACHER.RAMPUP_ITERS 400 " + MT, False),
    "M2": ("grid", "mean_teacher", SIG, "SOLVER.MAX_ITER 1000 MEAN_TEACHER.RAMPUP_ITERS 400 " + MT, True),
    "M3": ("grid", "mean_teacher", SIG, "SOLVER.MAX_ITER 3000 MEAN_TEACHER.RAMPUP_ITERS 1200 " + MT, True),
    "M4": ("grid", "mean_teacher", SIG, "SOLVER.MAX_ITER 1000 MEAN_TEACHER.RAMPUP_ITERS 400 " + MT
           + " SOLVER.CLASS_BALANCE none", True),
    "M5": ("grid", "mean_teacher", SIG, "SOLVER.MAX_ITER 1000 MEAN_TEACHER.RAMPUP_ITERS 400 " + MT
           + " MODEL.DROPOUT 0.5", True),
    "M6": ("grid", "mean_teacher", SIG, "SOLVER.MAX_ITER 1000 MEAN_TEACHER.RAMPUP_ITERS 400 " + MT
           + " INPUT.ATTRIBUTE_NOISE_STD 0.15", True),
    # Round 2: each method's levers that raised its val accuracy over its grid base (S1, M2), together.
    "S23": ("round2", "supervised", SIG, "SOLVER.MAX_ITER 3000 SOLVER.BATCH_SIZE 128 SOLVER.CLASS_BALANCE none",
            False),
}

# The image-only grid (fixed before its results). Both methods see 32 labelled crops a step
# (DOM + DEM 32 px crops, no attributes); Mean Teacher adds 32 unlabelled crops a step. The trunk was
# chosen on val before the grid (README: regnetx_002, 2.3x cheaper a step, unless more than 2 points
# below resnet18 on val; it was 10 points below, so resnet18 and the 600 steps that one core allows).
# Mean Teacher's ramp-up is 40 % of the schedule (Tarvainen & Valpola: 40k of 150k steps); its EMA
# decay stays 0.99 throughout: 0.999 after the ramp-up would leave the final teacher 0.999^360 = 70 %
# the step-240 teacher in a 600-step schedule (the earlier 300-step run: 0.999^200 = 82 % the
# step-100 teacher, itself the average of the first 100 students). Consistency weight 10 (the earlier
# runs) or 100: the reference divides the labelled cross-entropy by the whole batch (this code: by
# the labelled crops), so its weight 100 at 31 labelled crops of 128 is about 400 in this code's terms.
IMG = "configs/age_net/agenet_R18_S32_cpu.yaml"
IMG_TRUNK = "resnet18"
IMAGE_STEPS = 600
IMG_BASE = f"MODEL.MODE image MODEL.TRUNK {IMG_TRUNK}"
IMG_SUP = f"{IMG_BASE} SOLVER.MAX_ITER {IMAGE_STEPS} SOLVER.BATCH_SIZE 32"
IMG_MT = (f"{IMG_BASE} SOLVER.MAX_ITER {IMAGE_STEPS} MEAN_TEACHER.ENABLED True SOLVER.BATCH_SIZE 64 "
          f"MEAN_TEACHER.UNLABELLED_FRACTION 0.5 MEAN_TEACHER.RAMPUP_ITERS {int(0.4 * IMAGE_STEPS)} "
          "MEAN_TEACHER.EMA_DECAY 0.99 MEAN_TEACHER.EMA_DECAY_AFTER_RAMPUP 0.0")
IMAGE_GRID = {
    # The ceiling: every training label, S1's schedule.
    "full_labels": ("reference", "supervised", IMG, IMG_SUP + " DATA.LABEL_FRACTION 1.0", False),
    "S1": ("grid", "supervised", IMG, IMG_SUP, False),
    # Half the steps: early stopping, the usual guard of ~12 labelled craters a class against overfitting.
    "S2": ("grid", "supervised", IMG, f"{IMG_BASE} SOLVER.MAX_ITER {IMAGE_STEPS // 2} SOLVER.BATCH_SIZE 32", False),
    "S3": ("grid", "supervised", IMG, IMG_SUP + " MODEL.DROPOUT 0.5", False),
    "M1": ("grid", "mean_teacher", IMG, IMG_MT + " MEAN_TEACHER.CONSISTENCY_WEIGHT 10.0", False),
    "M2": ("grid", "mean_teacher", IMG, IMG_MT + " MEAN_TEACHER.CONSISTENCY_WEIGHT 100.0", False),
    # Round 2, exactly one of the two: the weight of whichever of M1 / M2 is better on val, with the
    # other worlds' craters added to the unlabelled pool (IMAGE_ROUND2).
    "M3_w10": ("round2", "mean_teacher", IMG, IMG_MT + " MEAN_TEACHER.CONSISTENCY_WEIGHT 10.0", True),
    "M3_w100": ("round2", "mean_teacher", IMG, IMG_MT + " MEAN_TEACHER.CONSISTENCY_WEIGHT 100.0", True),
}
#: round-2 rule of the image grid: (the round-1 rows compared on val) -> the round-2 row of each winner.
IMAGE_ROUND2 = {"M1": "M3_w10", "M2": "M3_w100"}

GRIDS = {"v5": GRID, "image": IMAGE_GRID}
WHAT = {
    "v5": "10 % of the training labels, attribute definitions version 5: supervised against Mean Teacher "
          "on the seed-0 synthetic world (test = whole 1-degree blocks) and the unseen seed-7 world; "
          "settings chosen on the validation blocks only",
    "image": "10 % of the training labels, image only (ResNet-18 on 32 px DOM + DEM crops, no attributes): "
             "supervised against Mean Teacher on the seed-0 synthetic world (test = whole 1-degree blocks) and "
             "the unseen seed-7 world; settings chosen on the validation blocks only",
}


def command(name: str, worlds: str, runs: str, grid: str = "v5") -> str:
    _, _, config, options, other = GRIDS[grid][name]
    extra = "".join(f" --unlabelled-world {worlds}/{w}" for w in OTHER_WORLDS) if other else ""
    return (f"python tools/train_age_net.py --config-file {config} --world {worlds}/w0 --test-world {worlds}/w7"
            f"{extra} --quiet OUTPUT_DIR {runs}/{name} {COMMON} {options}")


def _stats(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": round(float(v.mean()), 4), "std": round(float(v.std(ddof=1)), 4) if len(v) > 1 else 0.0,
            "per_trial": [round(float(x), 4) for x in v]}


def run_row(name: str, run_dir: Path, grid: str = "v5") -> dict | None:
    summary = run_dir / "summary.json"
    if not summary.exists():
        return None
    s = json.loads(summary.read_text())
    trials = s["trials"]
    part, method, config, options, other = GRIDS[grid][name]
    row = {"part": part, "method": method, "config_file": config, "options": options,
           "unlabelled_worlds": list(OTHER_WORLDS) if other else [], "model": s["model"],
           "config_hash": s["config_hash"], "seeds": [t["seed"] for t in trials],
           "n_labelled": [t["n_train"] for t in trials], "n_unlabelled": [t["n_unlabelled"] for t in trials],
           "train_seconds": [round(t["train_seconds"], 1) for t in trials]}
    for split in ("val", "test", "unseen"):
        row[split] = {"accuracy": _stats([t[split]["accuracy"] for t in trials]),
                      "macro_f1": _stats([t[split]["macro_f1"] for t in trials])}
    return row


def paired(a: dict, b: dict) -> dict:
    """b minus a, trial by trial (same seeds), in accuracy points."""
    if a["seeds"] != b["seeds"]:
        raise ValueError("the two rows were trained on different seeds: not paired")
    out = {}
    for split in ("val", "test", "unseen"):
        d = 100.0 * (np.asarray(b[split]["accuracy"]["per_trial"]) - np.asarray(a[split]["accuracy"]["per_trial"]))
        out[split] = {"mean_points": round(float(d.mean()), 2), "std_points": round(float(d.std(ddof=1)), 2),
                      "per_trial_points": [round(float(x), 2) for x in d], "ahead": int((d > 0).sum()),
                      "trials": len(d)}
    return out


def image_round2(runs: Path) -> str:
    """The image grid's round-2 row: that of the round-1 Mean Teacher row (IMAGE_ROUND2) with the best mean
    val accuracy. Reads val alone; every round-1 row must have finished."""
    val = {}
    for name in IMAGE_ROUND2:
        row = run_row(name, runs / name, "image")
        if row is None:
            raise ValueError(f"round 1 row {name} has not finished ({runs / name / 'summary.json'})")
        val[name] = row["val"]["accuracy"]["mean"]
    return IMAGE_ROUND2[max(val, key=val.get)]


def collect(runs: Path, grid: str = "v5") -> dict:
    rows = {n: r for n in GRIDS[grid] if (r := run_row(n, runs / n, grid)) is not None}
    result = {
        "what": WHAT[grid],
        "worlds": "deepcraters synth --out DIR/wS --size 2048 --seed S --quiet for S in 0 (trained on), 7 (unseen), "
                  "1, 2, 3 (extra unlabelled craters, labels dropped, --unlabelled-world)",
        "command": "python tools/train_age_net.py --config-file CONFIG --world WORLDS/w0 --test-world WORLDS/w7 "
        "[--unlabelled-world WORLDS/w1 ...] --quiet OUTPUT_DIR RUNS/NAME " + COMMON + " OPTIONS",
        "runs": rows,
    }
    if "fixed_sup" in rows and "fixed_mt" in rows:
        result["fixed_comparison"] = paired(rows["fixed_sup"], rows["fixed_mt"])
    chosen = {}
    for method in ("supervised", "mean_teacher"):
        cands = {n: r for n, r in rows.items() if r["part"] in ("grid", "round2") and r["method"] == method}
        if cands:
            chosen[method] = max(cands, key=lambda n: cands[n]["val"]["accuracy"]["mean"])
    result["chosen_on_val"] = chosen
    if len(chosen) == 2:
        result["chosen_comparison"] = paired(rows[chosen["supervised"]], rows[chosen["mean_teacher"]])
        if "full_labels" in rows:  # what the labels left out are worth on the same splits
            result["full_labels_over_chosen_supervised"] = paired(rows[chosen["supervised"]], rows["full_labels"])
        result["goal_met"] = bool(result["chosen_comparison"]["test"]["mean_points"] >= 3.0
                                  and result["chosen_comparison"]["unseen"]["mean_points"] >= 3.0)
        # Mean Teacher with each unlabelled pool, each chosen on val within its own rows, against the
        # same chosen supervised row: what the other worlds' craters add.
        by_pool = {}
        for pool, other in (("training_world_only", False), ("with_other_worlds", True)):
            cands = {n: r for n, r in rows.items() if r["part"] in ("grid", "round2")
                     and r["method"] == "mean_teacher" and bool(r["unlabelled_worlds"]) == other}
            if cands:
                best = max(cands, key=lambda n: cands[n]["val"]["accuracy"]["mean"])
                by_pool[pool] = {"chosen_on_val": best,
                                 "over_chosen_supervised": paired(rows[chosen["supervised"]], rows[best])}
        result["mean_teacher_by_unlabelled_pool"] = by_pool
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("commands", help="print the training command of every grid row")
    c.add_argument("--worlds", default="/tmp/ages")
    c.add_argument("--runs", default="/tmp/ages/runs")
    c.add_argument("names", nargs="*", help="rows (default: all)")
    c.add_argument("--round2", action="store_true",
                   help="image grid: only the round-2 row that round 1's val accuracies choose")
    k = sub.add_parser("collect", help="the table of the finished runs, the choice on val, paired differences")
    k.add_argument("--runs", type=Path, default=Path("/tmp/ages/runs"))
    k.add_argument("--out", type=Path, default=None)
    k.add_argument("--val-only", action="store_true", help="print only the val accuracies (while choosing)")
    for q in (c, k):
        q.add_argument("--grid", choices=sorted(GRIDS), default="v5",
                       help="v5: attributes version 5 (the default); image: the image-only ablation")
    args = p.parse_args(argv)
    if args.what == "commands":
        if args.round2:
            if args.grid != "image":
                raise SystemExit("--round2 is the image grid's rule (--grid image)")
            names = [image_round2(Path(args.runs))]
        else:  # round 2 (which needs round 1's val) only when asked by name
            names = args.names or [n for n, r in GRIDS[args.grid].items()
                                   if not (args.grid == "image" and r[0] == "round2")]
        for n in names:
            print(command(n, args.worlds, args.runs, args.grid))
        return 0
    res = collect(args.runs, args.grid)
    for n, r in res["runs"].items():
        line = f"{n:10s} {r['method']:13s} val {r['val']['accuracy']['mean']:.3f}"
        if not args.val_only:
            line += (f"  test {r['test']['accuracy']['mean']:.3f} +- {r['test']['accuracy']['std']:.3f}"
                     f"  unseen {r['unseen']['accuracy']['mean']:.3f} +- {r['unseen']['accuracy']['std']:.3f}")
        print(line)
    print("chosen on val:", res["chosen_on_val"])
    if not args.val_only:
        for key in ("fixed_comparison", "chosen_comparison", "full_labels_over_chosen_supervised"):
            if key in res:
                print(key, json.dumps({s: {k: v for k, v in d.items() if k != "trials"} for s, d in res[key].items()}))
        for pool, d in res.get("mean_teacher_by_unlabelled_pool", {}).items():
            print(pool, d["chosen_on_val"], json.dumps({s: {k: v for k, v in x.items() if k != "trials"}
                                                        for s, x in d["over_chosen_supervised"].items()}))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
