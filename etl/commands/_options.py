"""Options shared by several subcommands, each defined once."""
from __future__ import annotations

import argparse

DB_HELP = ("database URL (default: $DATABASE_URL, else postgresql://postgres@localhost:5432/deepcraters); "
           "keep passwords in ~/.pgpass or the environment")


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """``--db URL``: the atlas database (``atlas_db.engine.database_url`` resolves the default)."""
    parser.add_argument("--db", default=None, metavar="URL", help=DB_HELP)


# ------------------------------------------------------------------ tile grids (tiles and atlas)

#: Defaults shared by ``tiles`` and ``atlas``, so a dataset is cut as the atlas sweeps: tiles of
#: 512 px overlapping by 128 px, so every crater up to 128 px lies whole in some tile; craters
#: 8-128 px wide are labelled (and kept) at each pyramid level 1, 2, 4.
TILE_SIZE_PX, OVERLAP_PX, LEVELS, MIN_DIAMETER_PX, MAX_DIAMETER_PX = 512, 128, (1, 2, 4), 8.0, 128.0


def parse_levels(tokens) -> tuple[int, ...]:
    """Pyramid levels from '1,2,4' or '1 2 4' (argparse tokens): downsample factors >= 1."""
    text = ",".join(tokens) if isinstance(tokens, (list, tuple)) else str(tokens)
    try:
        levels = tuple(int(v) for v in text.replace(" ", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be integers, e.g. 1,2,4 or 1 2 4; got {text!r}")
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"levels must be downsample factors >= 1, got {text!r}")
    return levels


class _LevelsAction(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        try:
            setattr(namespace, self.dest, parse_levels(values))
        except argparse.ArgumentTypeError as exc:
            parser.error(str(exc))


def add_tile_grid_options(parser: argparse.ArgumentParser) -> None:
    """The tile grid and crater-size options of ``tiles`` and ``atlas``: one name, one format, one
    default each (old spellings of ``atlas`` kept as aliases)."""
    parser.add_argument("--tile-size", type=int, default=TILE_SIZE_PX, help="tile side, px")
    parser.add_argument("--overlap", type=int, default=OVERLAP_PX,
                        help="overlap of neighbouring tiles, px (>= --max-diameter-px, so every crater is whole in "
                             "some tile)")
    parser.add_argument("--levels", nargs="+", action=_LevelsAction, default=LEVELS, metavar="LEVEL",
                        help="pyramid downsample factors: 1,2,4 or 1 2 4")
    parser.add_argument("--min-diameter-px", "--min-diameter", dest="min_diameter_px", type=float,
                        default=MIN_DIAMETER_PX, help="smallest crater labelled / kept at a level, px")
    parser.add_argument("--max-diameter-px", "--max-diameter", dest="max_diameter_px", type=float,
                        default=MAX_DIAMETER_PX, help="largest crater labelled / kept at a level, px")


def add_local_projection_options(parser: argparse.ArgumentParser) -> None:
    """Tiles in a projection centred on each tile (``etl.local_tiles``): for global or polar mosaics."""
    parser.add_argument("--projection", choices=("mosaic", "local"), default="mosaic",
                        help="mosaic: tiles are windows of the mosaic's own grid; local: each tile is warped into an "
                             "azimuthal equidistant projection centred on it (craters round at every latitude, "
                             "tiles across +-180 and at the poles; the DEM alone suffices for DEM-only channels)")
    parser.add_argument("--pixel-size-m", type=float, default=None,
                        help="local: level-1 pixel side, metres (default: the DEM's pixel at the equator)")
    parser.add_argument("--sun-azimuth", type=float, default=None,
                        help="hillshade channel: sun azimuth, degrees clockwise from north (default 315)")
    parser.add_argument("--sun-elevation", type=float, default=None,
                        help="hillshade channel: sun elevation, degrees (default 30)")


def native_pixel_size_m(path, assume_crs=None) -> float:
    """A raster's mean pixel side at the equator (or its projection's linear unit), metres."""
    from etl.geometry import PixelGrid
    from etl.rasters import open_raster

    with open_raster(path, assume_crs=assume_crs) as ds:
        return PixelGrid.from_dataset(ds, assume_crs=assume_crs).pixel_size_m
