"""``deepcraters figure``: draw a DOM tile and its DEM side by side with the catalogue's crater boxes."""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

# One colour per age class, oldest first (dark purple -> red: old and subdued -> fresh and bright).
AGE_COLOURS = ("#7b3294", "#2c7bb6", "#1a9641", "#fdae61", "#d7191c")
#: The world the figure draws when none is given (small: a few seconds).
DEFAULT_WORLD = dict(size_px=768, pixel_size_m=100.0, seed=2, crater_density_per_mpx=450.0)


def _best_window(boxes: np.ndarray, codes: np.ndarray, width: int, height: int, size: int) -> tuple[int, int]:
    """Top-left of the window holding the most whole craters of the most age classes."""
    best, best_score = (0, 0), -1.0
    step = max(size // 8, 1)
    for row in range(0, max(height - size, 0) + 1, step):
        for col in range(0, max(width - size, 0) + 1, step):
            inside = ((boxes[:, 0] >= col) & (boxes[:, 1] >= row) & (boxes[:, 2] <= col + size)
                      & (boxes[:, 3] <= row + size))
            score = 1000 * len(set(codes[inside])) + inside.sum()
            if score > best_score:
                best, best_score = (col, row), score
    return best


def draw_tile_figure(world_dir, out_png, *, tile_size_px: int = 384, col_off: int | None = None,
                     row_off: int | None = None, dpi: int = 80) -> Path:
    """Draw one tile of a world (dom.tif, dem.tif, catalogue.csv): the DOM with the catalogue's
    projected crater boxes coloured by age class, and the DEM (hillshaded colour map with a colour
    bar in metres). Returns the PNG path."""
    import matplotlib
    import matplotlib.lines

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LightSource, Normalize
    from matplotlib.patches import Patch, Rectangle

    from etl.age_classes import AgeClass
    from etl.catalogue import read_catalogue
    from etl.geometry import PixelGrid, crater_boxes_px
    from etl.rasters import open_raster, read_aligned, read_window

    world = Path(world_dir)
    cat = read_catalogue(world / "catalogue.csv", age_col="age_class")
    with open_raster(world / "dom.tif") as dom_ds, open_raster(world / "dem.tif") as dem_ds:
        grid = PixelGrid.from_dataset(dom_ds)
        size = min(tile_size_px, grid.width, grid.height)
        boxes = crater_boxes_px(grid, cat.lon, cat.lat, cat.diameter_km)
        codes = cat.age_class.to_numpy()
        if col_off is None or row_off is None:
            col_off, row_off = _best_window(boxes, codes, grid.width, grid.height, size)
        tile = grid.window(col_off, row_off, size, size)
        dom, dem = read_aligned(dom_ds, dem_ds, tile)
    units = None
    if (world / "units.tif").is_file():
        with open_raster(world / "units.tif") as units_ds:
            units = np.ma.filled(read_window(units_ds, (col_off, row_off, size, size)), 0)
    dom, dem = np.ma.filled(dom, np.nan), np.ma.filled(dem, np.nan)
    tile_boxes = boxes - [col_off, row_off, col_off, row_off]
    shown = ((tile_boxes[:, 2] > 0) & (tile_boxes[:, 3] > 0) & (tile_boxes[:, 0] < size) & (tile_boxes[:, 1] < size))

    km = tile.pixel_size_m / 1000.0
    extent = (0, size * km, size * km, 0)
    fig, axes = plt.subplots(1, 2, figsize=(13.2, 6.6), dpi=dpi, constrained_layout=True)
    axes[0].imshow(dom, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="lanczos")
    norm = Normalize(float(np.nanmin(dem)), float(np.nanmax(dem)))
    cmap = plt.get_cmap("gist_earth")
    shaded = LightSource(azdeg=315, altdeg=35).shade(dem, cmap=cmap, norm=norm, blend_mode="soft",
                                                     vert_exag=3.0, dx=tile.pixel_size_m, dy=tile.pixel_size_m)
    axes[1].imshow(shaded, extent=extent, interpolation="lanczos")
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes[1], shrink=0.85, pad=0.02)
    bar.set_label("elevation (m, Moon sphere 1,737.4 km)")

    if units is not None and 0 < units.mean() < 1:
        # Outline of the maria (geologic unit 1): craters inside are younger than the mare surface.
        centres = (np.arange(size) + 0.5) * km
        axes[1].contour(centres, centres, units, levels=[0.5], colors="white", linewidths=1.2, linestyles="--")
        handles_units = [matplotlib.lines.Line2D([], [], color="white", ls="--", label="maria boundary")]
        axes[1].legend(handles=handles_units, loc="lower left", fontsize=8, facecolor="0.3", labelcolor="white",
                       framealpha=0.8)
    for ax in axes:
        for i in np.flatnonzero(shown):
            x0, y0, x1, y1 = tile_boxes[i] * km
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=1.1,
                                   edgecolor=AGE_COLOURS[int(codes[i])]))
        ax.set_xlim(0, size * km)
        ax.set_ylim(size * km, 0)
        ax.set_xlabel("map x (km from tile corner)")
    axes[0].set_ylabel("map y (km from tile corner)")
    axes[0].set_title("DOM (hillshade x albedo; fresh craters bright, maria dark)", fontsize=11)
    axes[1].set_title("DEM (hillshaded colour map)", fontsize=11)
    counts = np.bincount(codes[shown].astype(int), minlength=len(AgeClass))
    handles = [Patch(facecolor="none", edgecolor=AGE_COLOURS[c], lw=2,
                     label=f"{c.label} ({c.code}, {c.end_ga:g}-{c.start_ga:g} Ga): {counts[c]}")
               for c in AgeClass]
    axes[0].legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.85, title="catalogue age class",
                   title_fontsize=8)
    lon, lat = tile.pixel_to_lonlat(size / 2.0, size / 2.0)
    where = (f"{abs(float(lat)):.2f}\N{DEGREE SIGN}{'N' if lat >= 0 else 'S'} "
             f"{abs(float(lon)):.2f}\N{DEGREE SIGN}{'E' if lon >= 0 else 'W'}")
    fig.suptitle(f"Synthetic lunar tile: {size} x {size} px at {tile.pixel_size_m:g} m/px, centre {where}, "
                 f"CRS {_crs_name(tile.crs)}", fontsize=12)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, pil_kwargs={"optimize": True})
    plt.close(fig)
    return out


def draw_dataset_tile_figure(dataset_dir, out_png, *, split: str = "train", tile_id: str | None = None,
                             dpi: int = 80) -> Path:
    """Draw one tile of any tile dataset (``etl.tile_dataset``: synthetic or real mosaics, LOLA,
    NAC frames): every channel side by side with the tile's crater boxes (dashed: cut by the
    tile edge). ``tile_id`` None picks the tile with the most craters. Returns the PNG path."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.patches import Rectangle
    from rasterio.errors import NotGeoreferencedWarning

    from etl.tile_dataset import read_dataset_info

    ds = Path(dataset_dir)
    info = read_dataset_info(ds)
    coco = json.loads((ds / f"{split}.json").read_text())
    if not coco["images"]:
        raise ValueError(f"{ds}: the {split} split has no tiles")
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    if tile_id is None:
        image = max(coco["images"], key=lambda im: len(by_image.get(im["id"], [])))
    else:
        matches = [im for im in coco["images"] if im.get("tile_id") == tile_id]
        if not matches:
            raise ValueError(f"{ds}: no tile {tile_id!r} in the {split} split")
        image = matches[0]
    import warnings

    with warnings.catch_warnings():  # a NAC dataset says it has no CRS (dataset.json's crs_note)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(ds / image["file_name"]) as src:
            pixels = src.read(out_dtype="float32", masked=True)
            georeferenced = src.crs is not None
            pixel_m = abs(src.transform.a) if georeferenced else None
    channels = info["channels"]
    n = len(channels)
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 6.4), dpi=dpi, constrained_layout=True, squeeze=False)
    cmaps = {"dom": "gray", "hillshade": "gray", "dem": "gist_earth", "slope": "magma"}
    anns = by_image.get(image["id"], [])
    for ax, name, band in zip(axes[0], channels, pixels):
        shown = ax.imshow(np.ma.filled(band, np.nan), cmap=cmaps.get(name, "viridis"), interpolation="nearest")
        if name not in ("dom", "hillshade"):
            fig.colorbar(shown, ax=ax, shrink=0.8, pad=0.02).set_label(f"{name} (tile values)")
        for a in anns:
            x, y, w, h = a["bbox"]
            ax.add_patch(Rectangle((x, y), w, h, fill=False, lw=0.9, edgecolor="#d7191c",
                                   ls="--" if a.get("truncated") else "-"))
        ax.set_title(name)
        ax.set_xlabel("column (px)")
    axes[0][0].set_ylabel("row (px)")
    size = f"{image['width']} x {image['height']} px" + (f" at {pixel_m:g} (CRS units)/px" if pixel_m else "")
    fig.suptitle(f"{ds.name}/{split}: tile {image.get('tile_id', image['id'])}\n({size}, level {image.get('level', 1)}), "
                 f"{len(anns)} craters (dashed: cut by the tile edge)"
                 + ("" if georeferenced else "; not georeferenced"), fontsize=11)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _crs_name(crs) -> str:
    """'IAU_2015:30110 (Moon (2015) - Sphere / Ocentric / Equirectangular, clon = 0)' or the WKT name."""
    import pyproj

    name = pyproj.CRS.from_wkt(crs.to_wkt()).name
    authority = crs.to_authority()
    return f"{':'.join(authority)} ({name})" if authority else name


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="deepcraters figure",
        description=("Draw one tile of a synthetic world (or any directory with dom.tif, dem.tif and a "
                     "catalogue.csv with lon, lat, diameter_km, age_class): the DOM with each catalogued "
                     "crater's projected rim box coloured by age class, and the DEM with a colour bar in metres. "
                     "Without --world, a small world is generated first (a few seconds). With --dataset, one "
                     "tile of any tile dataset (real or synthetic; every channel) with its crater boxes."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", required=True, help="PNG to write (e.g. docs/synthetic_tile.png)")
    ap.add_argument("--world", default=None, help="world directory from 'deepcraters synth'")
    ap.add_argument("--dataset", default=None,
                    help="a tile dataset instead (from 'deepcraters tiles' or detectron2_rfcn.nac_data: real or "
                         "synthetic): draw one of its tiles, every channel, with its crater boxes")
    ap.add_argument("--split", default="train", help="with --dataset: the split (train, val, test)")
    ap.add_argument("--tile-id", default=None, help="with --dataset: the tile (default: the one with most craters)")
    ap.add_argument("--tile-size", type=int, default=384, help="tile side, pixels")
    ap.add_argument("--col", type=int, default=None, help="tile's left column (default: the richest window)")
    ap.add_argument("--row", type=int, default=None, help="tile's top row (default: the richest window)")
    ap.add_argument("--seed", type=int, default=DEFAULT_WORLD["seed"], help="seed of the generated world")
    ap.add_argument("--dpi", type=int, default=80, help="resolution of the PNG")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dataset:
        out = draw_dataset_tile_figure(args.dataset, args.out, split=args.split, tile_id=args.tile_id, dpi=args.dpi)
    elif args.world:
        out = draw_tile_figure(args.world, args.out, tile_size_px=args.tile_size, col_off=args.col,
                               row_off=args.row, dpi=args.dpi)
    else:
        from etl.synthetic import generate_world

        with tempfile.TemporaryDirectory(prefix="deepcraters-figure-") as tmp:
            generate_world(tmp, **{**DEFAULT_WORLD, "seed": args.seed})
            out = draw_tile_figure(tmp, args.out, tile_size_px=args.tile_size, col_off=args.col,
                                   row_off=args.row, dpi=args.dpi)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


def draw_atlas_figure(dom_path, atlas, catalogue, out_png, *, min_diameter_px: float = 10.0, dpi: int = 80) -> Path:
    """The whole mosaic's DOM with the atlas over the catalogue: detections that match a
    catalogue crater (etl.matching) in green, unmatched detections in orange, catalogue
    craters the atlas missed in red. Catalogue craters under ``min_diameter_px`` are not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    from etl.geometry import PixelGrid, crater_boxes_px
    from etl.matching import has_match
    from etl.rasters import open_raster

    with open_raster(dom_path) as ds:
        grid = PixelGrid.from_dataset(ds)
        dom = ds.read(1, masked=True)
    cat_boxes = crater_boxes_px(grid, catalogue.lon, catalogue.lat, catalogue.diameter_km)
    big_enough = np.sqrt((cat_boxes[:, 2] - cat_boxes[:, 0]) * (cat_boxes[:, 3] - cat_boxes[:, 1])) >= min_diameter_px
    found = has_match(atlas.lon, atlas.lat, atlas.diameter_km, catalogue.lon, catalogue.lat, catalogue.diameter_km)
    recalled = has_match(catalogue.lon, catalogue.lat, catalogue.diameter_km, atlas.lon, atlas.lat, atlas.diameter_km)

    fig, ax = plt.subplots(figsize=(10, 10 * grid.height / grid.width))
    ax.imshow(dom, cmap="gray")

    def draw(boxes, colour, width):
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width))

    atlas_boxes = atlas[["x0_px", "y0_px", "x1_px", "y1_px"]].to_numpy()
    draw(atlas_boxes[found], "#1a9641", 1.0)
    draw(atlas_boxes[~found], "#fdae61", 1.0)
    draw(cat_boxes[big_enough & ~recalled], "#d7191c", 1.0)
    n_cat = int(big_enough.sum())
    ax.set_title(f"atlas: {len(atlas)} craters; catalogue craters >= {min_diameter_px:g} px found: "
                 f"{int((big_enough & recalled).sum())} of {n_cat}")
    ax.legend(handles=[Line2D([], [], color=c, label=t) for c, t in (
        ("#1a9641", "detected, in the catalogue"), ("#fdae61", "detected, not in the catalogue"),
        ("#d7191c", "in the catalogue, missed"))], loc="lower left", fontsize=8)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=dpi)
    plt.close(fig)
    return out_png
