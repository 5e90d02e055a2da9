"""``deepcraters`` command line: one entry point, one subcommand per job.

Subcommand modules are imported only when chosen, so ``deepcraters --help`` and
``import etl`` stay light (no torch, no Detectron2, no SQLAlchemy). Each target is
``module:function`` where ``function(argv) -> int`` parses its own arguments
(``deepcraters SUB --help`` shows them).
"""
from __future__ import annotations

import importlib
import sys

# name -> (target, one-line help). Order is the order of the pipeline.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("etl.commands.demo:main", "the whole pipeline on a synthetic study area, start to finish"),
    "synth": ("etl.commands.synth:main", "write a synthetic lunar study area (DOM, DEM, catalogue, units)"),
    "lunar-rasters": ("etl.commands.lunar_rasters:main", "real-Moon LOLA DEM + albedo GeoTIFFs (and Head 2010 ages)"),
    "tiles": ("etl.commands.tiles:main", "cut mosaics + catalogue into a Detectron2-ready tile dataset"),
    "figure": ("etl.commands.figure:main", "draw a DOM/DEM tile with its catalogue boxes to a PNG"),
    "atlas": ("etl.commands.atlas:main", "detect every crater of a DOM + DEM mosaic with a trained R-FCN"),
    "detect": ("etl.commands.detect:main", "detect the craters of plain images (NAC PNGs) at native size"),
    "evaluate": ("etl.commands.evaluate:main", "score an atlas against a reference catalogue (P, R, F1, errors, SFD)"),
    "ages": ("etl.commands.ages:main", "date every crater of an atlas with a trained age network (5 lunar systems)"),
    "load": ("etl.commands.load:main", "validate atlas/age files and load them into PostGIS (idempotent)"),
    "query": ("etl.commands.query:main", "spatial queries on the crater atlas in PostGIS"),
    "db": ("etl.commands.db:main", "create / migrate the atlas schema and its roles"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: deepcraters COMMAND [ARGS...]",
        "",
        "Map and date lunar impact craters: synthetic worlds, tiles, R-FCN detection,",
        "age estimation and a PostGIS atlas. Run 'deepcraters COMMAND --help' for details.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def run_command(name: str, argv: list[str]) -> int:
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"deepcraters: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run_command(name, rest)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
