"""``deepcraters demo``: the whole pipeline on a synthetic study area, start to finish.

synth world -> tile dataset -> train R-FCN (``detectron2_rfcn.engine``, quick CPU schedule) ->
evaluate on the spatially held-out test region -> atlas of the whole mosaic -> train the age
network on the world's dated craters and date the atlas (``etl/commands/demo_ages.py``) -> load
atlas and ages into PostGIS -> SQL answers. Each step writes under ``--out`` and is skipped when its output
is already there (``--fresh`` redoes everything), so an interrupted demo resumes.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from etl.commands._options import add_db_option

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "rfcn_timm_R_18_C3_1600it.yaml"
# Train / val / test shares of the study area's regions. The val region only calibrates the score
# threshold recorded with the model, and at the default (0.7, 0.15, 0.15) it held 73 craters: too
# few to place a threshold. These fractions give val 5 of the 16 regions (about 2.4x the craters)
# and leave the test region (the last along the region path) as it was.
DEMO_SPLIT_FRACTIONS = (0.55, 0.3, 0.15)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deepcraters demo",
        description="Run the whole pipeline on a synthetic lunar study area (nothing to download): generate "
                    "DOM + DEM + catalogue, cut tiles, train the R-FCN detector on a quick CPU schedule, "
                    "evaluate it on a spatially held-out region, map every crater of the mosaic into an atlas, "
                    "date its craters with the age network, load atlas and ages into PostGIS and answer a few "
                    "spatial and age queries. Steps whose output exists are "
                    "reused.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="working directory")
    p.add_argument("--size", type=int, default=1536, help="study area side, px (100 m/px)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic world")
    p.add_argument("--center", type=float, nargs=2, default=(-20.0, 10.0), metavar=("LON", "LAT"),
                   help="centre of the study area, degrees")
    p.add_argument("--config-file", type=Path, default=DEFAULT_CONFIG, help="detector config")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations, the learning rate dropped at 75 %% and 90 %% of them; None = the "
                        "config's own schedule (~0.30 s per iteration on 2 idle cores with the default config)")
    p.add_argument("--tile-size", type=int, default=256, help="tile side, px")
    p.add_argument("--age-iters", type=int, default=None,
                   help="age-network training steps; None = the age config's own schedule "
                        "(configs/age_net/agenet_attr_sigma_cpu.yaml: 1,500 steps of 512 craters' attributes)")
    add_db_option(p)
    p.add_argument("--no-db", action="store_true", help="stop after writing the atlas and the ages")
    p.add_argument("--fresh", action="store_true", help="redo every step")
    return p


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(t0: float, what: str) -> None:
    print(f"   {what} ({time.perf_counter() - t0:.0f} s)", flush=True)


class StepFailed(RuntimeError):
    pass


def _train_net(*argv: str) -> None:
    """``python -m detectron2_rfcn.engine`` (what tools/train_net.py launches), in its own process:
    training's memory and Detectron2's logging setup end with it."""
    if subprocess.run([sys.executable, "-m", "detectron2_rfcn.engine", *argv]).returncode != 0:
        raise StepFailed(f"python -m detectron2_rfcn.engine {' '.join(argv)} failed (its log is above)")


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except StepFailed as exc:
        print(f"deepcraters demo: {exc}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    world_dir, tiles_dir, model_dir = out / "world", out / "tiles", out / "model"
    atlas_path = out / "atlas.gpkg"
    run_name = f"demo-seed{args.seed}"

    t0 = _step("1/7 synthetic study area")
    if args.fresh or not (world_dir / "world.json").exists():
        from etl.synthetic import generate_world

        # Craters up to the largest size the two pyramid levels below can label and map.
        summary = generate_world(world_dir, size_px=args.size, pixel_size_m=100.0, seed=args.seed,
                                 max_diameter_px=2 * (args.tile_size // 4),
                                 center_lon_deg=args.center[0], center_lat_deg=args.center[1], progress=True)
        _done(t0, f"{summary.n_craters_catalogued} catalogued craters in {world_dir}")
    else:
        _done(t0, f"reusing {world_dir}")

    t0 = _step("2/7 tile dataset (train/val/test split by region)")
    if args.fresh or not (tiles_dir / "dataset.json").exists():
        from etl.tiling import build_dataset

        build_dataset(world_dir / "dom.tif", world_dir / "dem.tif", world_dir / "catalogue.csv", tiles_dir,
                      tile_size_px=args.tile_size, overlap_px=args.tile_size // 4, levels=(1, 2),
                      min_diameter_px=8, max_diameter_px=args.tile_size // 4,
                      split_fractions=DEMO_SPLIT_FRACTIONS, progress=True)
    info = json.loads((tiles_dir / "dataset.json").read_text())
    _done(t0, f"tiles per split: {info['splits']}")

    weights = model_dir / "model_final.pth"
    config = ["--config-file", str(args.config_file)]
    opts = ["DATASETS.CRATER.DIR", str(tiles_dir), "OUTPUT_DIR", str(model_dir),
            "DATASETS.CRATER.PIXEL_STATS_FROM_DATASET", "True"]
    # Without --iters the config's own schedule (MAX_ITER, STEPS) is trained.
    schedule = [] if args.iters is None else [
        "SOLVER.MAX_ITER", str(args.iters), "SOLVER.STEPS", f"({int(args.iters * 0.75)}, {int(args.iters * 0.9)})"]
    iters = "the config's" if args.iters is None else str(args.iters)
    t0 = _step(f"3/7 train R-FCN ({iters} iterations, {args.config_file.name}; log in {model_dir}/log.txt)")
    if args.fresh or not weights.exists():
        _train_net(*config, *opts, *schedule, "TEST.EVAL_PERIOD", "0")
        _done(t0, f"weights {weights}")
    else:
        _done(t0, f"reusing {weights}")

    t0 = _step("4/7 evaluate on the held-out test region")
    # The config training saved holds the score threshold calibrated on the val region.
    _train_net("--config-file", str(model_dir / "config.yaml"), "--eval-only", *opts, "MODEL.WEIGHTS", str(weights),
               "DATASETS.TEST", "('craters_test',)")
    _done(t0, "metrics above (precision, recall, F1 by diameter bin)")

    t0 = _step("5/7 atlas of the whole mosaic")
    if args.fresh or not atlas_path.exists():
        from detectron2_rfcn.atlas import AtlasSettings, write_mosaic_atlas
        from detectron2_rfcn.config import default_score_threshold, get_rfcn_cfg

        # The config training saved: same channels, pixel statistics, model and calibrated threshold.
        cfg = get_rfcn_cfg(str(model_dir / "config.yaml"))
        settings = AtlasSettings(levels=(1, 2), tile_size_px=args.tile_size, overlap_px=args.tile_size // 4,
                                 max_diameter_px=args.tile_size // 4, score_threshold=default_score_threshold(cfg))
        atlas = write_mosaic_atlas(cfg, str(weights), world_dir / "dom.tif", world_dir / "dem.tif", atlas_path,
                                   run_name=run_name, settings=settings)
        _done(t0, f"{len(atlas)} craters -> {atlas_path}")
        import pandas as pd

        from etl.commands.figure import draw_atlas_figure

        png = draw_atlas_figure(world_dir / "dom.tif", atlas, pd.read_csv(world_dir / "catalogue.csv"),
                                out / "atlas.png")
        print(f"   picture: {png}")
    else:
        _done(t0, f"reusing {atlas_path}")

    age_steps = "its config's schedule" if args.age_iters is None else f"{args.age_iters} steps"
    t0 = _step(f"6/7 crater ages: train the age network ({age_steps}) on the world's dated craters, "
               "date the atlas")
    from etl.commands import demo_ages

    age_model = demo_ages.train_age_net(world_dir, out / "age_net", args.age_iters, args.fresh)
    print(f"   age network: {demo_ages.age_summary(out / 'age_net')}")
    ages_path = demo_ages.date_atlas(out, world_dir, atlas_path, age_model, run_name, args.fresh)
    _done(t0, f"ages -> {ages_path}")

    if args.no_db:
        return 0
    t0 = _step("7/7 PostGIS: load and query")
    from etl.commands.demo_sql import load_and_query

    load_and_query(args.db, atlas_path, world_dir / "catalogue.csv", run_name, args.center)
    demo_ages.load_and_query_ages(args.db, ages_path, world_dir, run_name, tuple(args.center))
    _done(t0, "done")
    return 0
