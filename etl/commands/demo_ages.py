"""The demo's age steps: train the age network on the synthetic world's dated craters, date
the atlas the detector mapped, load the ages into PostGIS, answer age queries and draw an
age map. Called by ``deepcraters demo`` (``etl/commands/demo.py``)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
AGE_CONFIG = REPO_ROOT / "configs" / "age_net" / "agenet_attr_sigma_cpu.yaml"
#: Colours of the age classes on maps, oldest (dark) to youngest (bright), by code.
CLASS_COLOURS = {"pNc": "#542788", "Nc": "#2166ac", "Ic": "#1a9850", "Ec": "#fdae61", "Cc": "#f7f7f7"}


def train_age_net(world_dir: Path, model_dir: Path, iters: int | None, fresh: bool) -> Path:
    """``python -m age_net.engine`` (what tools/train_age_net.py runs) on the world's catalogue, one
    trial, spatially held-out val/test blocks; returns the model file."""
    model = model_dir / "trial0" / "model_final.pth"
    if model.exists() and not fresh:
        if _attribute_definitions_current(model):
            print(f"   reusing {model}")
            return model
        print(f"   {model} was made with older attribute definitions: training again")
        fresh = True
    argv = [sys.executable, "-m", "age_net.engine", "--config-file", str(AGE_CONFIG), "--world", str(world_dir),
            "OUTPUT_DIR", str(model_dir), "TRIALS", "1"]
    if iters is not None:
        argv += ["SOLVER.MAX_ITER", str(iters)]
    if fresh and (model_dir / "summary.json").exists():
        (model_dir / "summary.json").unlink()
    if subprocess.run(argv).returncode != 0:
        from etl.commands.demo import StepFailed

        raise StepFailed(f"{' '.join(argv)} failed (its output is above)")
    return model


def _attribute_definitions_current(model: Path) -> bool:
    """Whether a checkpoint's attributes were measured with today's definitions (else the model
    would refuse today's attributes)."""
    from age_net.predict import load_age_model
    from etl.attributes import ATTRIBUTE_DEFINITIONS_VERSION

    try:
        version = load_age_model(model, device="cpu").schema.version
    except (ValueError, KeyError, RuntimeError):
        return False
    return version.split(":")[0] == str(ATTRIBUTE_DEFINITIONS_VERSION)


def units_at(world_dir: Path, lon, lat) -> np.ndarray:
    """The world's unit name (highlands / maria) under each crater centre."""
    from etl.geometry import PixelGrid
    from etl.rasters import open_raster
    from etl.synthetic import UNIT_NAMES

    with open_raster(world_dir / "units.tif") as ds:
        grid = PixelGrid.from_dataset(ds)
        codes = ds.read(1)
    col, row = grid.lonlat_to_pixel(np.asarray(lon, float), np.asarray(lat, float))
    r = np.clip(np.floor(row).astype(int), 0, codes.shape[0] - 1)
    c = np.clip(np.floor(col).astype(int), 0, codes.shape[1] - 1)
    return np.array([UNIT_NAMES.get(int(v), "unmapped") for v in codes[r, c]])


def draw_age_map(dom_path: Path, atlas: pd.DataFrame, ages: pd.DataFrame, catalogue: pd.DataFrame,
                 out_png: Path, dpi: int = 80) -> Path:
    """Two panels over the DOM: the atlas's craters coloured by predicted class, and the
    catalogue's craters by their true class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    from etl.geometry import PixelGrid, crater_boxes_px
    from etl.rasters import open_raster

    with open_raster(dom_path) as ds:
        grid = PixelGrid.from_dataset(ds)
        dom = ds.read(1, masked=True)
    dated = atlas.merge(ages[["crater_id", "age_class", "entropy"]], on="crater_id")
    panels = [("age network: the atlas's craters", dated), ("truth: the catalogue's craters", catalogue)]
    fig, axes = plt.subplots(1, 2, figsize=(16, 8 * grid.height / grid.width + 0.6))
    for ax, (title, table) in zip(axes, panels):
        ax.imshow(dom, cmap="gray")
        boxes = crater_boxes_px(grid, table.lon, table.lat, table.diameter_km)
        for (x0, y0, x1, y1), code in zip(boxes, table["age_class"].astype(str)):
            ax.add_patch(Ellipse(((x0 + x1) / 2, (y0 + y1) / 2), x1 - x0, y1 - y0, fill=False, linewidth=1.4,
                                 edgecolor=CLASS_COLOURS.get(code, "red")))
        counts = table["age_class"].astype(str).value_counts()
        ax.set_title(f"{title} ({len(table)}): " + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in CLASS_COLOURS),
                     fontsize=10)
        ax.set_axis_off()
    axes[0].legend(handles=[Line2D([], [], color=c, lw=3, label=k) for k, c in CLASS_COLOURS.items()],
                   loc="lower left", fontsize=9, facecolor="#888888")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png


def date_atlas(out: Path, world_dir: Path, atlas_path: Path, model: Path, run_name: str, fresh: bool) -> Path:
    """Ages of the atlas's craters (``deepcraters ages``' function) and the age-map picture."""
    from age_net.data import unit_source
    from age_net.predict import write_atlas_ages
    from etl.contracts import read_ages, read_atlas

    ages_path = out / "ages.parquet"
    if fresh or not ages_path.exists() or ages_path.stat().st_mtime < max(model.stat().st_mtime,
                                                                          atlas_path.stat().st_mtime):
        ages, skipped = write_atlas_ages(atlas_path, model, ages_path, dom_path=world_dir / "dom.tif",
                                         dem_path=world_dir / "dem.tif", units=unit_source(world_dir),
                                         run_name=f"{run_name}-ages", device="auto", progress=True)
        print(f"   {len(ages)} craters dated -> {ages_path}" + (f"; {len(skipped)} not measurable" if skipped else ""))
    ages, _ = read_ages(ages_path)
    atlas, _ = read_atlas(atlas_path)
    png = draw_age_map(world_dir / "dom.tif", atlas, ages, pd.read_csv(world_dir / "catalogue.csv"),
                       out / "age_map.png")
    print(f"   picture: {png}")
    return ages_path


def load_and_query_ages(url: str | None, ages_path: Path, world_dir: Path, run_name: str,
                        center_lon_lat: tuple[float, float], radius_km: float = 100.0) -> None:
    """Load the age table and ask PostGIS: the Copernican craters near a point, and the craters
    of each age class on each geologic unit."""
    from atlas_db import queries
    from atlas_db.engine import get_engine
    from etl.load import load_ages

    print(f"   {load_ages(ages_path, url, replace=True).summary()}")
    lon, lat = center_lon_lat
    age_run = f"{run_name}-ages"
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            young = queries.dated_craters_within(conn, lon, lat, radius_km, age_run, age_class="Cc")
            near = queries.dated_craters_within(conn, lon, lat, radius_km, age_run)
            everything = queries.craters_with_age(conn, age_run)
    finally:
        engine.dispose()
    young = young.sort_values("diameter_km", ascending=False)
    print(f"\n-- {len(young)} Copernican craters (of {len(near)} dated) within {radius_km:g} km of ({lon}, {lat}), "
          "largest first")
    cols = ["crater_id", "lon", "lat", "diameter_km", "distance_km", "p_cc", "entropy"]
    print(young[cols].head(8).to_string(index=False, float_format=lambda v: f"{v:.4g}") if len(young) else "(none)")
    everything["unit"] = units_at(world_dir, everything["lon"], everything["lat"])
    table = pd.crosstab(everything["unit"], everything["age_class"]).reindex(columns=list(CLASS_COLOURS),
                                                                           fill_value=0)
    print("\n-- dated craters per age class and geologic unit (maria flooded at 3.5 Ga: no pNc / Nc craters "
          "belong on them)")
    print(table.to_string())


def age_summary(model_dir: Path) -> str:
    """One line: the age net's accuracy on its held-out test blocks."""
    path = model_dir / "summary.json"
    if not path.exists():
        return "no summary"
    s = json.loads(path.read_text())["test"]
    return (f"held-out test accuracy {s['accuracy']['mean']:.3f}, macro-F1 {s['macro_f1']['mean']:.3f}, "
            f"ECE {s['ece']['mean']:.3f}")
