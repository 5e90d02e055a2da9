"""Tile datasets: the file contract, boxes vs projected craters, region splits, pyramid levels."""
from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import rasterio
from pycocotools.coco import COCO

from etl.age_classes import AGE_CLASS_CODES
from etl.geometry import LunarCRSError, PixelGrid, check_lunar_crs, crater_boxes_px
from etl.rasters import CHANNELS, model_channels, read_aligned
from etl.synthetic import generate_world
from etl.tile_dataset import TileDatasetWriter, read_dataset_info
from etl.tiling import (SPLITS, RegionLayout, build_dataset, plan_tiles, region_layout, split_counts,
                        tile_starts, tile_windows)

TILE, OVERLAP, LEVELS = 128, 16, (1, 2, 4)
MIN_D, MAX_D = 8.0, 40.0  # a narrow range, so large craters are labels only at coarse levels


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("tile_world")
    generate_world(out, size_px=512, seed=5, center_lat_deg=35.0, center_lon_deg=-60.0,
                   crater_density_per_mpx=900.0, max_diameter_px=150.0)
    return out


@pytest.fixture(scope="module")
def dataset(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiles")
    summary = build_dataset(world / "dom.tif", world / "dem.tif", world / "catalogue.csv", out, tile_size_px=TILE,
                            overlap_px=OVERLAP, levels=LEVELS, min_diameter_px=MIN_D, max_diameter_px=MAX_D,
                            seed=1, progress=False)
    meta = json.loads((out / "dataset.json").read_text())
    cocos = {s: json.loads((out / f"{s}.json").read_text()) for s in SPLITS}
    return {"out": out, "summary": summary, "meta": meta, "coco": cocos,
            "catalogue": pd.read_csv(world / "catalogue.csv")}


def _images(dataset):
    return [(s, im) for s in SPLITS for im in dataset["coco"][s]["images"]]


def _anns_by_image(coco):
    out = {im["id"]: [] for im in coco["images"]}
    for a in coco["annotations"]:
        out[a["image_id"]].append(a)
    return out


def test_dataset_json_contract(dataset):
    meta, out = dataset["meta"], dataset["out"]
    assert meta["channels"] == list(CHANNELS) == ["dom", "dem", "slope"]
    assert len(meta["pixel_mean"]) == 3 and len(meta["pixel_std"]) == 3
    assert all(0.0 < m < 1.0 for m in meta["pixel_mean"]) and all(s > 0.0 for s in meta["pixel_std"])
    check_lunar_crs(meta["crs"])
    assert set(meta["source_mosaics"]) == {"dom", "dem"}
    assert meta["levels"] == list(LEVELS) and meta["tile_size_px"] == TILE
    assert meta["splits"] == {s: len(dataset["coco"][s]["images"]) for s in SPLITS}
    assert all(meta["splits"][s] > 0 for s in SPLITS)
    assert {"assignment", "size_px", "grid"} <= set(meta["regions"])
    assert meta["created_by"]["code_version"] and meta["created_by"]["parameters"]["seed"] == 1
    for s, im in _images(dataset):
        assert im["file_name"] == f"tiles/{s}/{im['file_name'].split('/')[-1]}"
        assert (out / im["file_name"]).is_file()


def test_pixel_statistics_are_those_of_the_train_tiles(dataset):
    values = []
    for im in dataset["coco"]["train"]["images"]:
        with rasterio.open(dataset["out"] / im["file_name"]) as ds:
            values.append(ds.read().reshape(3, -1))
    values = np.concatenate(values, axis=1)
    np.testing.assert_allclose(dataset["meta"]["pixel_mean"], values.mean(axis=1), rtol=1e-4)
    np.testing.assert_allclose(dataset["meta"]["pixel_std"], values.std(axis=1), rtol=1e-3)


def test_coco_files_load_with_pycocotools(dataset):
    for s in SPLITS:
        coco = COCO(str(dataset["out"] / f"{s}.json"))
        assert coco.getCatIds() == [1] and coco.loadCats(1)[0]["name"] == "crater"
        assert len(coco.getImgIds()) == dataset["meta"]["splits"][s]
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert ann["area"] == pytest.approx(ann["bbox"][2] * ann["bbox"][3])
    # Background tiles (no crater) are kept, and most tiles do have craters.
    n_with = sum(bool(a) for s in SPLITS for a in _anns_by_image(dataset["coco"][s]).values())
    assert 0 < n_with <= sum(dataset["meta"]["splits"].values())


def test_tiles_are_georeferenced_model_inputs(dataset, world):
    with rasterio.open(world / "dom.tif") as dom_ds, rasterio.open(world / "dem.tif") as dem_ds:
        base = PixelGrid.from_dataset(dom_ds)
        for s, im in _images(dataset)[::3]:
            col0, row0, w0, h0 = im["window"]
            f = im["level"]
            expected = base.downsampled(f).window(col0 // f, row0 // f, im["width"], im["height"])
            with rasterio.open(dataset["out"] / im["file_name"]) as ds:
                assert ds.count == 3 and ds.dtypes == ("float32",) * 3
                assert ds.descriptions == tuple(CHANNELS)
                assert (ds.height, ds.width) == (im["height"], im["width"]) and w0 == im["width"] * f
                assert ds.crs == base.crs
                assert ds.transform.almost_equals(expected.transform)
                data = ds.read()
            # The pixels are the model channels of that window of the mosaics.
            dom, dem = read_aligned(dom_ds, dem_ds, expected)
            np.testing.assert_allclose(data, model_channels(dom, dem, expected), atol=1e-5)  # slope in ground metres


def test_boxes_are_the_projected_craters(dataset):
    n_full = n_trunc = 0
    for s in SPLITS:
        anns = _anns_by_image(dataset["coco"][s])
        for im in dataset["coco"][s]["images"]:
            if not anns[im["id"]]:
                continue
            with rasterio.open(dataset["out"] / im["file_name"]) as ds:
                grid = PixelGrid.from_dataset(ds)  # the tile's own georeference
            for a in anns[im["id"]]:
                x, y, w, h = a["bbox"]
                assert 0 <= x and 0 <= y and x + w <= im["width"] + 1e-6 and y + h <= im["height"] + 1e-6
                box = crater_boxes_px(grid, a["lon"], a["lat"], a["diameter_km"])[0]
                if a["truncated"]:
                    n_trunc += 1
                    clipped = np.clip(box, 0, [im["width"], im["height"]] * 2)
                    np.testing.assert_allclose([x, y, x + w, y + h], clipped, atol=1e-6)
                    assert (box[:2] < 0).any() or box[2] > im["width"] or box[3] > im["height"]
                    assert w * h >= 0.5 * (box[2] - box[0]) * (box[3] - box[1]) - 1e-6
                else:
                    n_full += 1
                    np.testing.assert_allclose([x, y, x + w, y + h], box, atol=1e-6)
                assert a["diameter_px"] == pytest.approx(max(box[2] - box[0], box[3] - box[1]), rel=1e-9)
                assert MIN_D <= a["diameter_px"] <= MAX_D
    assert n_full > 50 and n_trunc > 0


def test_boxes_are_wider_than_tall_at_35_degrees(dataset):
    """Simple cylindrical at latitude 35: east-west stretched by 1/cos(35) = 1.22."""
    ratios = [a["bbox"][2] / a["bbox"][3] for s in SPLITS for a in dataset["coco"][s]["annotations"]
              if not a["truncated"]]
    assert np.median(ratios) == pytest.approx(1.0 / np.cos(np.radians(35.0)), rel=0.03)


def test_splits_are_spatially_disjoint(dataset):
    footprints = {s: [im["window"] for im in dataset["coco"][s]["images"]] for s in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        for (c0, r0, w0, h0), (c1, r1, w1, h1) in itertools.product(footprints[a], footprints[b]):
            overlap_w = min(c0 + w0, c1 + w1) - max(c0, c1)
            overlap_h = min(r0 + h0, r1 + h1) - max(r0, r1)
            assert overlap_w <= 0 or overlap_h <= 0, (a, b)
    # Every tile lies in regions of its own split.
    assign = dataset["meta"]["regions"]["assignment"]
    size = dataset["meta"]["regions"]["size_px"]
    n_rows, n_cols = dataset["meta"]["regions"]["grid"]
    for s, im in _images(dataset):
        c0, r0, w, h = im["window"]
        rows = range(r0 // size, min(-(-(r0 + h) // size), n_rows))
        cols = range(c0 // size, min(-(-(c0 + w) // size), n_cols))
        assert {assign[str(r * n_cols + c)] for r in rows for c in cols} == {s}


def test_craters_appear_at_the_levels_where_they_fit(dataset, world):
    cat = dataset["catalogue"]
    labelled = {}  # (level, tile id) -> crater ids
    for s in SPLITS:
        anns = _anns_by_image(dataset["coco"][s])
        for im in dataset["coco"][s]["images"]:
            labelled[(im["level"], im["id"])] = {a["crater_id"] for a in anns[im["id"]]}
    with rasterio.open(world / "dom.tif") as ds:
        base = PixelGrid.from_dataset(ds)
    for f in LEVELS:
        boxes = crater_boxes_px(base.downsampled(f), cat.lon, cat.lat, cat.diameter_km)
        size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        in_range = (size >= MIN_D) & (size <= MAX_D)
        for s, im in _images(dataset):
            if im["level"] != f:
                continue
            col, row = im["window"][0] // f, im["window"][1] // f
            inside = ((boxes[:, 0] >= col) & (boxes[:, 1] >= row) & (boxes[:, 2] <= col + im["width"])
                      & (boxes[:, 3] <= row + im["height"]))
            got = labelled[(f, im["id"])]
            assert set(cat.crater_id[inside & in_range]) <= got  # every crater that fits is a label
            assert not (got & set(cat.crater_id[~in_range]))    # none out of range is
    # The pyramid matters: some craters too large for level 1 are labels at a coarser level.
    fine = crater_boxes_px(base, cat.lon, cat.lat, cat.diameter_km)
    too_big_at_1 = set(cat.crater_id[np.maximum(fine[:, 2] - fine[:, 0], fine[:, 3] - fine[:, 1]) > MAX_D])
    coarse_labels = set().union(*[ids for (lvl, _), ids in labelled.items() if lvl > 1])
    assert too_big_at_1 & coarse_labels


def test_background_only_catalogue_keeps_every_tile(world, tmp_path):
    one = pd.DataFrame({"lon": [0.0], "lat": [0.0], "diameter_km": [1.0]})  # far outside the mosaic
    summary = build_dataset(world / "dom.tif", world / "dem.tif", one, tmp_path / "bg", tile_size_px=256,
                            overlap_px=0, levels=(1,), split_fractions=(1, 0, 0), progress=False)
    assert summary.tiles == {"train": 4, "val": 0, "test": 0}
    assert summary.annotations == {"train": 0, "val": 0, "test": 0}


def test_mosaic_without_crs_needs_assume_crs(world, tmp_path):
    for name in ("dom.tif", "dem.tif"):
        with rasterio.open(world / name) as src:
            profile, data = src.profile, src.read()
        profile.pop("crs")
        with rasterio.open(tmp_path / name, "w", **profile) as dst:
            dst.write(data)
    cat = pd.read_csv(world / "catalogue.csv").head(40)
    kwargs = dict(tile_size_px=256, overlap_px=0, levels=(1,), split_fractions=(1, 0, 0), progress=False)
    with pytest.raises(LunarCRSError, match="no CRS"):
        build_dataset(tmp_path / "dom.tif", tmp_path / "dem.tif", cat, tmp_path / "a", **kwargs)
    world_crs = json.loads((world / "world.json").read_text())["crs"]
    assumed = build_dataset(tmp_path / "dom.tif", tmp_path / "dem.tif", cat, tmp_path / "b", assume_crs=world_crs,
                            **kwargs)
    reference = build_dataset(world / "dom.tif", world / "dem.tif", cat, tmp_path / "c", **kwargs)
    assert assumed.annotations == reference.annotations
    a = json.loads((tmp_path / "b" / "train.json").read_text())["annotations"]
    b = json.loads((tmp_path / "c" / "train.json").read_text())["annotations"]
    assert [x["bbox"] for x in a] == [x["bbox"] for x in b]


def test_layout_helpers():
    assert split_counts(10, (0.7, 0.15, 0.15)) == [7, 2, 1] or split_counts(10, (0.7, 0.15, 0.15)) == [7, 1, 2]
    assert split_counts(3, (0.9, 0.05, 0.05)) == [1, 1, 1]  # every split gets a region when it can
    assert sum(split_counts(16, (0.6, 0.2, 0.2))) == 16
    starts = tile_starts(500, 128, 112)
    assert starts[0] == (0, 128) and starts[-1] == (372, 128)
    covered = np.zeros(500, bool)
    for s, n in starts:
        covered[s:s + n] = True
    assert covered.all() and all(b[0] - a[0] <= 112 for a, b in zip(starts, starts[1:]))
    assert tile_starts(100, 128, 112) == [(0, 100)]
    # Without edge cover (NAC frames): whole tiles only, the remainder left out.
    assert tile_starts(800, 256, 256, cover_edge=False) == [(0, 256), (256, 256), (512, 256)]
    assert tile_starts(100, 128, 128, cover_edge=False) == []
    assert list(tile_windows(300, 200, 128, 0, cover_edge=False)) == [(0, 0, 128, 128), (128, 0, 128, 128)]
    layout = region_layout(512, 512, 128, (0.5, 0.25, 0.25), seed=3)
    assert isinstance(layout, RegionLayout) and sorted(layout.split_of).count("train") == 8
    tiles, _ = plan_tiles(512, 512, layout, levels=(1, 2), tile_size_px=100, overlap_px=20)
    for t in tiles:  # whole footprint in regions of the tile's split
        c0, r0, w, h = t.window_level0()
        assert {layout.split_of[i] for i in layout.regions_touched(c0, r0, c0 + w, r0 + h)} == {t.split}


def test_tiles_command(world, tmp_path):
    from etl.cli import main

    small = tmp_path / "world"
    shutil.copytree(world, small)
    assert main(["tiles", "--world", str(small), "--out", str(tmp_path / "ds"), "--tile-size", "256",
                 "--overlap", "32", "--levels", "1,2", "--quiet"]) == 0
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["levels"] == [1, 2] and sum(meta["splits"].values()) > 0
    anns = [a for s in SPLITS for a in json.loads((tmp_path / "ds" / f"{s}.json").read_text())["annotations"]]
    # Age classes travel as their codes, the catalogue's own.
    code_of = pd.read_csv(small / "catalogue.csv").set_index("crater_id")["age_class"]
    assert anns and all(a["age_class"] == code_of[a["crater_id"]] for a in anns)
    assert {a["age_class"] for a in anns} <= set(AGE_CLASS_CODES)


def test_writer_writes_codes_checks_boxes_and_leaves_nothing_on_failure(tmp_path):
    from rasterio.transform import from_origin

    out = tmp_path / "made" / "ds"
    pixels = np.zeros((1, 8, 8), np.float32)
    with pytest.raises(ValueError, match="is not inside the 8 x 8 tile"):
        with TileDatasetWriter(out, ["dom"], crs=None, crs_note="test frames", generator="test") as w:
            w.add_tile("train", "a", pixels, transform=from_origin(0, 0, 1, 1), region=0, window=[0, 0, 8, 8],
                       annotations=[{"box_xyxy": [1, 1, 4, 4], "truncated": False, "diameter_px": 3.0,
                                     "age_class": 2}])
            w.add_tile("train", "b", pixels, transform=from_origin(8, 0, 1, 1), region=0, window=[8, 0, 8, 8],
                       annotations=[{"box_xyxy": [1, 1, 9, 4], "truncated": False, "diameter_px": 8.0}])
    assert not (tmp_path / "made").exists()  # neither the dataset nor the folder made for it
    with TileDatasetWriter(out, ["dom"], crs=None, crs_note="test frames", generator="test") as w:
        w.add_tile("val", "a", pixels + 1, transform=from_origin(0, 0, 1, 1), region=0, window=[0, 0, 8, 8],
                   annotations=[{"box_xyxy": [1, 1, 4, 4], "truncated": False, "diameter_px": 3.0, "age_class": 2}])
        w.finish(tile_size_px=8, levels=[1], source_mosaics={}, parameters={})
    info = read_dataset_info(out)
    assert info["crs"] is None and info["crs_note"] == "test frames" and info["splits"]["val"] == 1
    ann = json.loads((out / "val.json").read_text())["annotations"][0]
    assert ann["age_class"] == "Ic" and ann["bbox"] == [1.0, 1.0, 3.0, 3.0] and ann["area"] == 9.0
    assert [p.name for p in (tmp_path / "made").iterdir()] == ["ds"]  # no partial or old copies beside it
    (out / "dataset.json").write_text(json.dumps({**info, "contract": "deepcraters.atlas"}))
    with pytest.raises(ValueError, match="this code reads 'deepcraters.tiles'"):
        read_dataset_info(out)
