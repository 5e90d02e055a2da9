"""The atlas at scale: the chunk plan, the batched resumable chunk worker, the crater-aware
block merge, and the in-process and Ray engines giving one atlas."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from detectron2_rfcn.atlas import AtlasSettings
from detectron2_rfcn.atlas_scale import ScaleSettings, plan_atlas
from etl.tiling import tile_starts

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def mosaic_files(tmp_path):
    dom, dem = tmp_path / "dom.tif", tmp_path / "dem.tif"
    dom.write_bytes(b"dom")
    dem.write_bytes(b"dem")
    return dom, dem


def test_plan_cuts_every_level_into_compact_chunks_covering_each_tile_once(mosaic_files):
    settings = AtlasSettings(levels=(1, 2, 4), tile_size_px=128, overlap_px=32, max_diameter_px=32)
    width, height = 2000, 1300
    plan = plan_atlas(*mosaic_files, "model-a", width_px=width, height_px=height, settings=settings,
                      scale=ScaleSettings(chunk_tiles=9))
    stride = 128 - 32
    for level in settings.levels:
        rows = tile_starts(-(-height // level), 128, stride)
        cols = tile_starts(-(-width // level), 128, stride)
        expected = sorted((c, r, w, h) for r, h in rows for c, w in cols)
        got = sorted(w for ch in plan.chunks if ch.level == level for w in ch.windows)
        assert got == expected  # every tile of the level exactly once
    for chunk in plan.chunks:
        assert len(chunk.windows) <= 9
        c0, r0, c1, r1 = chunk.footprint_level0_px()
        # A 3 x 3 block of tiles: compact, not a strip.
        assert c1 - c0 <= (2 * stride + 128) * chunk.level and r1 - r0 <= (2 * stride + 128) * chunk.level
    assert len({c.chunk_id for c in plan.chunks}) == len(plan.chunks)


def test_chunk_ids_are_stable_and_change_with_their_inputs(mosaic_files):
    dom, dem = mosaic_files
    settings = AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=32, max_diameter_px=32)
    kw = dict(width_px=900, height_px=700, settings=settings, scale=ScaleSettings(chunk_tiles=4))

    def ids(**over):
        args = {**kw, **over}
        return [c.chunk_id for c in plan_atlas(dom, dem, args.pop("model", "model-a"), **args).chunks]

    base = ids()
    assert ids() == base
    # Settings that do not change detections keep the ids (a resumed run may change them).
    assert ids(scale=ScaleSettings(chunk_tiles=4, batch_size=16, merge_block_px=512)) == base
    assert ids(settings=AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=32, max_diameter_px=32,
                                      nms_iou=0.3)) == base
    # Adding a level keeps the other levels' chunks.
    with_4 = ids(settings=AtlasSettings(levels=(1, 2, 4), tile_size_px=128, overlap_px=32, max_diameter_px=32))
    assert set(base) < set(with_4)
    # The model, a detection setting, the chunking, or the mosaic's content change every id.
    assert not set(ids(model="model-b")) & set(base)
    assert not set(ids(settings=AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=32, max_diameter_px=32,
                                              score_threshold=0.7))) & set(base)
    assert not set(ids(scale=ScaleSettings(chunk_tiles=9))) & set(base)
    st = dom.stat()
    os.utime(dom, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert not set(ids()) & set(base)


# --------------------------------------------------------------------------- worker, merge, resume

from detectron2_rfcn.atlas_merge import merge_craters, merge_plan  # noqa: E402
from detectron2_rfcn.atlas_scale import (ChunkWorker, chunk_path, detect_mosaic_chunked, plan_mosaic,  # noqa: E402
                                         read_chunk, run_plan)
from etl.geometry import PixelGrid, crater_boxes_px  # noqa: E402
from etl.matching import is_match  # noqa: E402
from etl.moon import great_circle_distance_m  # noqa: E402
from etl.synthetic import generate_world  # noqa: E402
from test_rfcn_atlas import CatalogueOracle  # noqa: E402  (the perfect detector of the sweep's tests)

# Small tiles and chunks of 2 x 2 tiles: many craters lie on chunk boundaries; merge blocks of
# 128 px cut the 384 px mosaic into 9.
SETTINGS = AtlasSettings(levels=(1, 2), tile_size_px=128, overlap_px=64, min_diameter_px=8, max_diameter_px=64,
                         score_threshold=0.5)
SCALE = ScaleSettings(chunk_tiles=4, batch_size=3, merge_block_px=128)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    return generate_world(out, size_px=384, pixel_size_m=200.0, center_lon_deg=179.0, center_lat_deg=40.0,
                          seed=3, min_diameter_px=8.0, max_diameter_px=60.0)


@pytest.fixture(scope="module")
def catalogue(world):
    import pandas as pd

    return pd.read_csv(world.catalogue_path)


def _expected(world, catalogue):
    import rasterio

    with rasterio.open(world.dom_path) as ds:
        grid0 = PixelGrid.from_dataset(ds)
    b = crater_boxes_px(grid0, catalogue["lon"], catalogue["lat"], catalogue["diameter_km"])
    size_px = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    m = SETTINGS.edge_margin_px
    inside = (b[:, 0] >= m) & (b[:, 1] >= m) & (b[:, 2] <= grid0.width - m) & (b[:, 3] <= grid0.height - m)
    return catalogue[inside & (size_px >= 8) & (size_px <= 64 * 2)]


def _matches(frame, crater) -> np.ndarray:
    return np.asarray(is_match(frame["lon"].to_numpy(), frame["lat"].to_numpy(), frame["diameter_km"].to_numpy(),
                               crater["lon"], crater["lat"], crater["diameter_km"]))


def test_chunked_atlas_finds_each_crater_once_across_chunks_blocks_and_levels(world, catalogue, tmp_path):
    import pandas as pd

    atlas, stats = detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path / "work", model="oracle",
                                         predictor=CatalogueOracle(catalogue), settings=SETTINGS, scale=SCALE,
                                         progress=False)
    plan = plan_mosaic(world.dom_path, world.dem_path, "oracle", settings=SETTINGS, scale=SCALE)
    assert stats.chunks_total == len(plan.chunks) == 10 and stats.chunks_computed == 10 and stats.chunks_reused == 0
    assert stats.tiles_computed == plan.n_tiles == 29

    expected = _expected(world, catalogue)
    assert len(expected) > 20
    # Each crater once: every expected crater is the same crater (etl.matching's rule) as
    # exactly one atlas crater, and every atlas crater sits on an expected one, at its place
    # and size.
    assert all(_matches(atlas, crater).sum() == 1 for _, crater in expected.iterrows())
    d_m = great_circle_distance_m(atlas["lon"].to_numpy()[:, None], atlas["lat"].to_numpy()[:, None],
                                  expected["lon"].to_numpy()[None, :], expected["lat"].to_numpy()[None, :])
    nearest = d_m.argmin(axis=1)
    true_d_km = expected["diameter_km"].to_numpy()[nearest]
    assert np.all(d_m[np.arange(len(atlas)), nearest] / (true_d_km * 1000) < 0.02)
    assert np.allclose(atlas["diameter_km"], true_d_km, rtol=0.02)
    # Two catalogue craters that the rule calls one (a crater superposed on another of
    # about its size, centres within half a diameter) are one atlas crater: the price of
    # merging views at two levels by that rule.
    e = expected
    same_pairs = sum(int(_matches(e.iloc[i + 1:], e.iloc[i]).sum()) for i in range(len(e)))
    assert len(atlas) == len(expected) - same_pairs

    # Craters seen by two chunks of one level, and craters seen at both levels, are among them.
    raw = pd.concat([read_chunk(chunk_path(tmp_path / "work", c.chunk_id)).assign(chunk=c.chunk_id)
                     for c in plan.chunks], ignore_index=True)
    two_chunks = two_levels = 0
    for _, crater in expected.iterrows():
        seen = raw[_matches(raw, crater)]
        two_chunks += seen[seen["level"] == 1]["chunk"].nunique() >= 2
        two_levels += seen["level"].nunique() == 2
    assert two_chunks >= 3 and two_levels >= 3


def test_block_merge_equals_one_global_merge(world, catalogue, tmp_path):
    plan = plan_mosaic(world.dom_path, world.dem_path, "oracle", settings=SETTINGS, scale=SCALE)
    run_plan(plan, tmp_path, world.dom_path, world.dem_path, predictor=CatalogueOracle(catalogue),
             settings=SETTINGS, scale=SCALE, progress=False)
    by_blocks = merge_plan(plan, tmp_path, settings=SETTINGS, scale=SCALE)
    one_block = merge_plan(plan, tmp_path, settings=SETTINGS, scale=ScaleSettings(merge_block_px=10**6))
    key = ["x0_px", "y0_px", "x1_px", "y1_px", "level"]
    assert len(by_blocks) == len(one_block) > 20
    assert by_blocks.sort_values(key).reset_index(drop=True).equals(one_block.sort_values(key).reset_index(drop=True))


def test_merge_is_crater_aware_not_pixel_iou():
    """One crater seen at levels 1 and 2 (boxes 35 % apart in size, centres 7 px apart: pixel
    IoU 0.43, which an IoU-0.5 NMS keeps twice) is one crater; two craters rim to rim are two."""
    import pandas as pd
    from torchvision.ops import box_iou
    import torch

    km_per_px = 0.1
    rows = []
    for x0, y0, size, score, level in [(100, 100, 20, 0.9, 1), (103, 95, 27, 0.8, 2),   # one crater
                                       (300, 300, 20, 0.9, 1), (320, 300, 20, 0.85, 1)]:  # two craters
        rows.append({"x0_px": x0, "y0_px": y0, "x1_px": x0 + size, "y1_px": y0 + size, "score": score,
                     "level": level, "diameter_km": size * km_per_px,
                     "lon": (x0 + size / 2) * km_per_px / 30.3, "lat": -(y0 + size / 2) * km_per_px / 30.3})
    det = pd.DataFrame(rows)
    iou = box_iou(torch.tensor(det[["x0_px", "y0_px", "x1_px", "y1_px"]].to_numpy()[:2], dtype=torch.float64),
                  torch.tensor(det[["x0_px", "y0_px", "x1_px", "y1_px"]].to_numpy()[:2], dtype=torch.float64))
    assert float(iou[0, 1]) < 0.5
    merged = merge_craters(det)
    assert sorted(merged["score"]) == [0.85, 0.9, 0.9]
    assert merged["level"].tolist().count(2) == 0  # the better-scored view of the first crater stays


class FailingAfter:
    """Fault injection for the resume test: the oracle, dying after ``n_tiles`` tiles as a
    worker killed midway would."""

    def __init__(self, oracle, n_tiles: int):
        self.oracle, self.left = oracle, n_tiles

    def __call__(self, channels, tile_grid):
        if self.left == 0:
            raise RuntimeError("worker killed")
        self.left -= 1
        return self.oracle(channels, tile_grid)


def test_interrupted_atlas_resumes_and_recomputes_only_missing_chunks(world, catalogue, tmp_path):
    oracle = CatalogueOracle(catalogue)
    kw = dict(model="oracle", settings=SETTINGS, scale=SCALE, progress=False)
    reference, _ = detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path / "ref", predictor=oracle, **kw)

    with pytest.raises(RuntimeError, match="worker killed"):
        detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path / "work", predictor=FailingAfter(oracle, 11),
                              **kw)
    files = sorted((tmp_path / "work" / "chunks").iterdir())
    assert all(f.suffix == ".parquet" for f in files)  # no temporary file left behind
    written = {f.name: f.stat().st_mtime_ns for f in files}
    assert 0 < len(written) < 10

    atlas, stats = detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path / "work", predictor=oracle, **kw)
    assert stats.chunks_reused == len(written) and stats.chunks_computed == 10 - len(written)
    assert all((tmp_path / "work" / "chunks" / n).stat().st_mtime_ns == t for n, t in written.items())
    assert atlas.reset_index(drop=True).equals(reference.reset_index(drop=True))

    again, stats = detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path / "work",
                                         predictor=FailingAfter(oracle, 0), **kw)
    assert stats.chunks_reused == 10 and stats.chunks_computed == 0
    assert again.reset_index(drop=True).equals(reference.reset_index(drop=True))


def test_worker_prefetches_while_the_model_runs(world, catalogue):
    """Reading runs in its own thread: with a slow model, the forward loop hardly waits."""
    import time

    class SlowOracle(CatalogueOracle):
        def __call__(self, channels, tile_grid):
            time.sleep(0.05)
            return super().__call__(channels, tile_grid)

    plan = plan_mosaic(world.dom_path, world.dem_path, "oracle", settings=SETTINGS, scale=SCALE)
    with ChunkWorker(SlowOracle(catalogue), world.dom_path, world.dem_path, settings=SETTINGS,
                     scale=SCALE) as worker:
        frames = list(worker.run_many(plan.chunks))
    assert [c for c, _ in frames] == list(plan.chunks)
    s = worker.stats
    assert s.tiles == plan.n_tiles
    assert s.read_s > 0 and s.wait_s < 0.5 * s.read_s


# --------------------------------------------------------------------------- engines and the command

REAL_SETTINGS = AtlasSettings(levels=(1, 2), tile_size_px=192, overlap_px=64, max_diameter_px=64,
                              score_threshold=0.0)
REAL_SCALE = ScaleSettings(chunk_tiles=4, batch_size=2, merge_block_px=128)


@pytest.fixture(scope="module")
def untrained_model(tmp_path_factory):
    """The quick-schedule R-FCN, untrained, saved once so that every engine loads one model."""
    import torch
    from detectron2.modeling import build_model

    from detectron2_rfcn.config import get_rfcn_cfg

    config = REPO_ROOT / "configs/quick_schedules/rfcn_R_18_C4_instant_test.yaml"
    cfg = get_rfcn_cfg(str(config), ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    weights = tmp_path_factory.mktemp("model") / "untrained.pth"
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    return config, cfg, weights


@pytest.mark.slow
def test_inprocess_and_ray_give_the_same_atlas(world, untrained_model, tmp_path):
    import torch

    from detectron2_rfcn.atlas_scale import write_mosaic_atlas_chunked

    _, cfg, weights = untrained_model
    kw = dict(run_name="engines", settings=REAL_SETTINGS, progress=False)
    # Ray actors run torch on one thread each: so does the in-process run, so that both sum in
    # one order and agree to the bit. It also runs one tile per pass: batches of tiles of one
    # shape change nothing (why the batch size is not part of a chunk id).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inproc, s_in = write_mosaic_atlas_chunked(
            cfg, str(weights), world.dom_path, world.dem_path, tmp_path / "inprocess.parquet",
            scale=ScaleSettings(chunk_tiles=4, batch_size=1, merge_block_px=128), **kw)
    finally:
        torch.set_num_threads(threads)
    on_ray, s_ray = write_mosaic_atlas_chunked(
        cfg, str(weights), world.dom_path, world.dem_path, tmp_path / "ray.parquet", engine="ray", workers=2,
        cpus_per_worker=1, ray_init={"num_cpus": 2, "object_store_memory": 100 * 2**20}, scale=REAL_SCALE, **kw)
    assert s_in.chunks_computed == s_ray.chunks_computed == 5 and s_ray.workers == 2
    assert len(inproc) > 10  # an untrained model fires everywhere at score 0: plenty to merge
    cols = ["lon", "lat", "diameter_km", "score", "x0_px", "y0_px", "x1_px", "y1_px", "level"]
    assert len(inproc) == len(on_ray)
    np.testing.assert_allclose(inproc[cols].to_numpy(float), on_ray[cols].to_numpy(float), rtol=0, atol=1e-9)


@pytest.mark.slow
def test_atlas_command_resumes_from_its_work_directory(world, untrained_model, tmp_path, capsys):
    from etl.commands.atlas import main
    from etl.contracts import read_atlas

    config, _, weights = untrained_model
    out = tmp_path / "atlas.gpkg"
    argv = ["--config-file", str(config), "--weights", str(weights), "--dom", str(world.dom_path),
            "--dem", str(world.dem_path), "--out", str(out), "--levels", "1", "2", "--tile-size", "192",
            "--overlap", "64", "--max-diameter", "64", "--score-threshold", "0.2", "--chunk-tiles", "4",
            "--batch-size", "2", "--quiet"]
    opts = ["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]  # config overrides come last
    assert main(argv + opts) == 0
    first = capsys.readouterr().out
    assert "5 chunks: 0 reused, 5 computed" in first
    atlas1, provenance = read_atlas(out)
    assert provenance.run_name == "atlas" and provenance.source_mosaics == (str(world.dom_path), str(world.dem_path))
    assert len(list((tmp_path / "atlas.gpkg.work" / "chunks").glob("*.parquet"))) == 5

    assert main(argv + ["--plan-only"] + opts) == 0
    plan_text = capsys.readouterr().out
    assert "total: 10 tiles" in plan_text and "5 of 5 chunks" in plan_text
    assert main(argv + opts) == 0
    assert "5 chunks: 5 reused, 0 computed" in capsys.readouterr().out
    atlas2, _ = read_atlas(out)
    assert atlas2.drop(columns="crater_id").equals(atlas1.drop(columns="crater_id"))
    assert f"{len(atlas1)} craters" in first
    # Without --score-threshold the model's calibrated threshold decides (the threshold is part of
    # each chunk id): a model calibrated at 0.2 finds the chunks of --score-threshold 0.2 done, not
    # those of 0.5.
    calibrated = opts + ["MODEL.RFCN.CALIBRATED_SCORE_THRESH", "0.2"]
    assert main(argv + calibrated) == 0
    capsys.readouterr()
    default = [a for a in argv if a not in ("--score-threshold", "0.2")]
    assert main(default + ["--plan-only"] + calibrated) == 0
    assert "5 of 5 chunks" in capsys.readouterr().out
    assert main(default + ["--score-threshold", "0.5", "--plan-only"] + calibrated) == 0
    assert "0 of 5 chunks" in capsys.readouterr().out


def test_strict_merge_rule_keeps_a_superposed_crater_apart(world, catalogue, tmp_path):
    """The project rule makes one crater of the test world's superposed pair (centres 0.9 km
    apart, diameters 2.4 and 3.1 km); the strict rule (a quarter diameter) keeps both, and still
    makes one crater of each crater's views from several tiles and levels."""
    from etl.matching import STRICT_RULE

    kw = dict(model="oracle", predictor=CatalogueOracle(catalogue), settings=SETTINGS, scale=SCALE, progress=False)
    project, _ = detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path, **kw)
    strict, stats = detect_mosaic_chunked(world.dom_path, world.dem_path, tmp_path, merge_rule=STRICT_RULE, **kw)
    assert stats.chunks_reused == 10  # the merge rule is not part of a chunk id
    expected = _expected(world, catalogue)
    assert len(strict) == len(expected) == len(project) + 1
    assert all(_matches(strict, crater).sum() >= 1 for _, crater in expected.iterrows())


@pytest.mark.slow
def test_atlas_process_killed_midway_resumes_with_only_complete_chunks(world, untrained_model, tmp_path):
    """SIGKILL, not an exception: whatever the kill interrupts, the chunk files left are whole
    Parquet files, and the rerun reuses exactly them."""
    import signal
    import subprocess
    import sys
    import time

    config, _, weights = untrained_model
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "etl", "atlas", "--config-file", str(config), "--weights", str(weights),
           "--dom", str(world.dom_path), "--dem", str(world.dem_path), "--out", str(tmp_path / "atlas.parquet"),
           "--levels", "1", "2", "--tile-size", "128", "--overlap", "64", "--max-diameter", "64",
           "--score-threshold", "0.2", "--chunk-tiles", "1", "--work-dir", str(work), "--quiet",
           "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    chunks, deadline = work / "chunks", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if chunks.exists() and len(list(chunks.glob("*.parquet"))) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    survivors = sorted(chunks.glob("*.parquet"))
    assert 3 <= len(survivors) < 29, "the run ended before it could be killed midway"
    for f in survivors:
        read_chunk(f)  # a half-written file would not parse

    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"29 chunks: {len(survivors)} reused, {29 - len(survivors)} computed" in done.stdout
