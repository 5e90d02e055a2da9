"""The atlas at scale: a plan of tile chunks, a batched chunk worker, resumable chunk files,
and engines that run the worker in this process or on Ray.

A global mosaic is millions of tiles, so the sweep of :mod:`detectron2_rfcn.atlas` is cut
into a plan: every pyramid level's tile grid (the one rule, :func:`etl.tiling.tile_starts`)
is cut into square blocks of about ``chunk_tiles`` tiles, and each chunk gets an id that is
a hash of what decides its detections (the mosaics' identity, the model, the sweep settings,
the chunk's level, index and windows). A chunk's detections, in lunar coordinates, are
written once as ``WORK/chunks/<chunk_id>.parquet`` (to a temporary name, then renamed, so
a file that exists is complete); a run skips every chunk whose file exists, so an
interrupted atlas resumes where it stopped. :mod:`detectron2_rfcn.atlas_merge` then merges
the chunk files block by block into the atlas.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from detectron2_rfcn.atlas import AtlasSettings, _keep_tile_boxes, atlas_provenance
from etl.geometry import PixelGrid, boxes_px_to_craters
from etl.tiling import tile_starts


#: Columns of a chunk file: the atlas's columns without ``crater_id`` (assigned after the merge).
DETECTION_COLUMNS: dict[str, str] = {
    "lon": "float64", "lat": "float64", "diameter_km": "float64", "score": "float64",
    "x0_px": "float64", "y0_px": "float64", "x1_px": "float64", "y1_px": "float64",  # level-0 pixels
    "level": "int32",
}
ENGINES: tuple[str, ...] = ("inprocess", "ray")


@dataclass(frozen=True)
class ScaleSettings:
    """How the sweep is cut and run (none of these change the detections, so none is in a chunk id
    except through the chunk's windows)."""

    chunk_tiles: int = 256        # tiles per chunk (a square block of the level's tile grid)
    batch_size: int = 4           # tiles per forward pass
    prefetch_batches: int = 2     # batches read ahead by the reader thread
    merge_block_px: int = 16384   # side of a merge block, level-0 pixels

    def __post_init__(self):
        for name in ("chunk_tiles", "batch_size", "prefetch_batches", "merge_block_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Chunk:
    """A spatially compact block of one level's tiles: the tiles of ``rows`` x ``cols`` (a plan
    of millions of tiles keeps a few numbers per chunk, not every window)."""

    chunk_id: str
    level: int                          # pyramid downsample factor
    index: int                          # within its level, row-major over blocks
    rows: tuple[tuple[int, int], ...]   # (row_off, height) of its tile rows, level pixels
    cols: tuple[tuple[int, int], ...]   # (col_off, width) of its tile columns

    @property
    def windows(self) -> list[tuple[int, int, int, int]]:
        """(col_off, row_off, width, height) of its tiles, row by row, in level pixels."""
        return [(col, row, w, h) for row, h in self.rows for col, w in self.cols]

    @property
    def n_tiles(self) -> int:
        return len(self.rows) * len(self.cols)

    def footprint_level0_px(self) -> tuple[int, int, int, int]:
        """(col0, row0, col1, row1) covered by the chunk's tiles, in level-0 pixels."""
        f = self.level
        return (min(c for c, _ in self.cols) * f, min(r for r, _ in self.rows) * f,
                max(c + w for c, w in self.cols) * f, max(r + h for r, h in self.rows) * f)


@dataclass(frozen=True)
class AtlasPlan:
    """Every chunk of a mosaic's sweep, and the key of the inputs that their ids derive from."""

    inputs_key: str
    width_px: int          # level-0 grid
    height_px: int
    chunks: tuple[Chunk, ...]

    @property
    def n_tiles(self) -> int:
        return sum(c.n_tiles for c in self.chunks)


def _sha256(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def file_identity(path: str | Path) -> dict:
    """What identifies a mosaic cheaply: its resolved path, size and modification time (hashing
    terabytes of mosaic would cost more than a chunk's inference)."""
    st = Path(path).resolve().stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_key(cfg, weights: str | Path | None) -> str:
    """Hash of a model: its config (the device left out: CPU and GPU chunks are interchangeable)
    and the content of its weights file."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "any"
    h = hashlib.sha256(cfg.dump().encode())
    if weights:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _detection_settings(settings: AtlasSettings) -> dict:
    """The settings that decide a chunk's detections (levels enter per chunk; the merge's
    ``nms_iou`` does not enter)."""
    d = asdict(settings)
    d.pop("levels")
    d.pop("nms_iou")
    return d


def plan_atlas(dom_path: str | Path, dem_path: str | Path, model: str, *, width_px: int, height_px: int,
               settings: AtlasSettings = AtlasSettings(), scale: ScaleSettings = ScaleSettings()) -> AtlasPlan:
    """The plan of a mosaic of ``width_px`` x ``height_px`` level-0 pixels: each level's tile grid
    cut into square blocks of ``isqrt(chunk_tiles)`` tiles a side (row-major), each chunk's id a
    hash of the mosaics' identity, ``model`` (see :func:`model_key`), the detection settings,
    the chunk's level, index and windows."""
    inputs = {"mosaics": [file_identity(dom_path), file_identity(dem_path)], "model": model,
              "settings": _detection_settings(settings)}
    inputs_key = _sha256(inputs)
    side = max(1, math.isqrt(scale.chunk_tiles))
    stride = settings.tile_size_px - settings.overlap_px
    chunks = []
    for level in settings.levels:
        grid_w, grid_h = math.ceil(width_px / level), math.ceil(height_px / level)
        rows = tile_starts(grid_h, settings.tile_size_px, stride)
        cols = tile_starts(grid_w, settings.tile_size_px, stride)
        index = 0
        for r0 in range(0, len(rows), side):
            for c0 in range(0, len(cols), side):
                sub_rows, sub_cols = tuple(rows[r0:r0 + side]), tuple(cols[c0:c0 + side])
                chunk_id = _sha256({"inputs": inputs_key, "level": level, "index": index, "rows": sub_rows,
                                    "cols": sub_cols})[:24]
                chunks.append(Chunk(chunk_id, int(level), index, sub_rows, sub_cols))
                index += 1
    return AtlasPlan(inputs_key, int(width_px), int(height_px), tuple(chunks))


def plan_mosaic(dom_path: str | Path, dem_path: str | Path, model: str, *, settings: AtlasSettings = AtlasSettings(),
                scale: ScaleSettings = ScaleSettings(), assume_crs=None) -> AtlasPlan:
    """:func:`plan_atlas` for the DOM's own grid."""
    from etl.rasters import open_raster

    with open_raster(dom_path, assume_crs=assume_crs) as ds:
        width_px, height_px = ds.width, ds.height
    return plan_atlas(dom_path, dem_path, model, width_px=width_px, height_px=height_px, settings=settings,
                      scale=scale)



def describe_plan(plan: AtlasPlan, settings: AtlasSettings, work_dir: str | Path | None = None) -> str:
    """Tiles, tile megapixels and chunks per level (and chunks already in ``work_dir``): what a
    run will cost, to be read against a benchmark's tiles per second."""
    lines = []
    for level in settings.levels:
        chunks = [c for c in plan.chunks if c.level == level]
        tiles = sum(c.n_tiles for c in chunks)
        mpx = sum(sum(h for _, h in c.rows) * sum(w for _, w in c.cols) for c in chunks) / 1e6
        lines.append(f"level {level}: {tiles} tiles ({mpx:.1f} tile megapixels) in {len(chunks)} chunks")
    mpx = sum(sum(h for _, h in c.rows) * sum(w for _, w in c.cols) for c in plan.chunks) / 1e6
    lines.append(f"total: {plan.n_tiles} tiles ({mpx:.1f} tile megapixels) in {len(plan.chunks)} chunks")
    if work_dir is not None:
        done = sum(chunk_path(work_dir, c.chunk_id).exists() for c in plan.chunks)
        lines.append(f"already done in {work_dir}: {done} of {len(plan.chunks)} chunks")
    return "\n".join(lines)


# --------------------------------------------------------------------------- chunk files


def chunk_path(work_dir: str | Path, chunk_id: str) -> Path:
    return Path(work_dir) / "chunks" / f"{chunk_id}.parquet"


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: frame[c].astype(t) if c in frame else pd.Series([], dtype=t)
                         for c, t in DETECTION_COLUMNS.items()})


def write_chunk(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a chunk's detections under a temporary name, then rename: a chunk file that exists
    is complete (a rename within a directory is atomic), so a killed run leaves none half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    _typed(frame).to_parquet(tmp, index=False)
    os.replace(tmp, path)


def read_chunk(path: str | Path) -> pd.DataFrame:
    return _typed(pd.read_parquet(path))


# --------------------------------------------------------------------------- the chunk worker


@dataclass
class WorkerStats:
    """Where a worker's time went, seconds (``wait_s``: the forward loop waiting for tiles)."""

    tiles: int = 0
    batches: int = 0
    forward_s: float = 0.0
    wait_s: float = 0.0
    read_s: float = 0.0


class ChunkWorker:
    """Runs a predictor over chunks of one mosaic: a background thread reads and prepares the
    next tiles while the model runs on a batch of the previous ones.

    ``predictor`` is a :class:`detectron2_rfcn.atlas.CraterPredictor` or any callable
    ``(channels, tile_grid) -> (boxes_xyxy_px, scores)``; a ``predict_batch`` method, when it
    has one, gets ``batch_size`` tiles of one shape at a time."""

    _DONE = object()

    def __init__(self, predictor, dom_path: str | Path, dem_path: str | Path, *,
                 settings: AtlasSettings = AtlasSettings(), scale: ScaleSettings = ScaleSettings(), assume_crs=None):
        from etl.rasters import open_raster

        self.predictor, self.settings, self.scale = predictor, settings, scale
        self.dom_ds = open_raster(dom_path, assume_crs=assume_crs)
        try:
            self.dem_ds = open_raster(dem_path, assume_crs=assume_crs)
        except Exception:
            self.dom_ds.close()
            raise
        self.grid0 = PixelGrid.from_dataset(self.dom_ds, assume_crs=assume_crs)
        self.stats = WorkerStats()

    def close(self) -> None:
        self.dom_ds.close()
        self.dem_ds.close()

    def __enter__(self) -> "ChunkWorker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_tiles(self, chunks: Sequence[Chunk], out: queue.Queue, stop: threading.Event) -> None:
        """The reader thread: each chunk's tiles in order onto ``out``, then the chunk itself as its
        end mark; after the last, _DONE (or the error). It reads across chunk boundaries, so the
        model never waits for a chunk's first tile. Only this thread touches the datasets while
        chunks run (rasterio datasets are not safe for concurrent use)."""
        from etl.rasters import model_channels, read_aligned

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for chunk in chunks:
                grid = self.grid0.downsampled(chunk.level)
                for window in chunk.windows:
                    t0 = time.perf_counter()
                    tile_grid = grid.window(*window)
                    dom, dem = read_aligned(self.dom_ds, self.dem_ds, tile_grid)
                    channels = model_channels(dom, dem, tile_grid)
                    self.stats.read_s += time.perf_counter() - t0
                    if not put((window, tile_grid, channels)):
                        return
                if not put(chunk):
                    return
            put(self._DONE)
        except BaseException as exc:  # handed to the forward loop, which raises it
            put(exc)

    def _predict(self, batch: list) -> list[tuple[np.ndarray, np.ndarray]]:
        t0 = time.perf_counter()
        predict_batch = getattr(self.predictor, "predict_batch", None)
        if predict_batch is not None:
            results = predict_batch([c for _, _, c in batch], [g for _, g, _ in batch])
        else:
            results = [self.predictor(c, g) for _, g, c in batch]
        self.stats.forward_s += time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.tiles += len(batch)
        return results

    def _items(self, chunks: Sequence[Chunk]) -> Iterator:
        """Tiles and chunk end marks from the reader thread."""
        items: queue.Queue = queue.Queue(maxsize=self.scale.batch_size * self.scale.prefetch_batches)
        stop = threading.Event()
        reader = threading.Thread(target=self._read_tiles, args=(list(chunks), items, stop), daemon=True,
                                  name="atlas-reader")
        reader.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = items.get()
                self.stats.wait_s += time.perf_counter() - t0
                if item is self._DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            reader.join()

    def _batches(self, chunks: Sequence[Chunk]) -> Iterator[list | Chunk]:
        """Consecutive tiles of one chunk and one shape, at most ``batch_size`` of them, and after
        a chunk's last batch the chunk itself."""
        batch: list = []
        for item in self._items(chunks):
            if isinstance(item, Chunk):
                if batch:
                    yield batch
                    batch = []
                yield item
                continue
            if batch and (len(batch) == self.scale.batch_size or item[2].shape != batch[0][2].shape):
                yield batch
                batch = []
            batch.append(item)

    def run_many(self, chunks: Sequence[Chunk]) -> Iterator[tuple[Chunk, pd.DataFrame]]:
        """Each chunk with its detections (see :meth:`run`), as soon as its last batch is done."""
        settings = self.settings
        boxes_all, scores_all = [], []
        for batch in self._batches(chunks):
            if isinstance(batch, Chunk):
                yield batch, self._frame(batch.level, boxes_all, scores_all)
                boxes_all, scores_all = [], []
                continue
            for (window, _, _), (boxes, scores) in zip(batch, self._predict(batch)):
                boxes, scores = np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, dtype=float)
                keep = (scores >= settings.score_threshold) & _keep_tile_boxes(boxes, window[2], window[3], settings)
                if keep.any():
                    col, row = window[0], window[1]
                    boxes_all.append((boxes[keep] + [col, row, col, row]))
                    scores_all.append(scores[keep])

    def run(self, chunk: Chunk) -> pd.DataFrame:
        """The chunk's detections that the tile rule keeps, in level-0 pixels and lunar coordinates."""
        ((_, frame),) = self.run_many([chunk])
        return frame

    def _frame(self, level: int, boxes_all: list, scores_all: list) -> pd.DataFrame:
        if not boxes_all:
            return _typed(pd.DataFrame())
        boxes, scores = np.concatenate(boxes_all) * level, np.concatenate(scores_all)
        lon, lat, diameter_km = boxes_px_to_craters(self.grid0, boxes)
        return _typed(pd.DataFrame({
            "lon": lon, "lat": lat, "diameter_km": diameter_km, "score": scores,
            "x0_px": boxes[:, 0], "y0_px": boxes[:, 1], "x1_px": boxes[:, 2], "y1_px": boxes[:, 3],
            "level": np.full(len(scores), level, dtype=np.int32)}))



# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class PredictorSpec:
    """A model to build where it runs (one per Ray actor): a Detectron2 config and weights."""

    cfg: object
    weights: str | None = None

    def build(self, device: str | None = None):
        from detectron2_rfcn.atlas import CraterPredictor

        cfg = self.cfg.clone()
        cfg.defrost()
        if device:
            cfg.MODEL.DEVICE = device
        return CraterPredictor.from_config(cfg, self.weights)


@dataclass
class RunStats:
    """What a run did: chunks reused from the work directory and chunks computed."""

    engine: str
    workers: int
    chunks_total: int
    chunks_reused: int
    chunks_computed: int = 0
    tiles_computed: int = 0
    wall_s: float = 0.0
    worker: WorkerStats = field(default_factory=WorkerStats)  # in-process only

    def summary(self) -> str:
        return (f"{self.chunks_total} chunks: {self.chunks_reused} reused, {self.chunks_computed} computed "
                f"({self.tiles_computed} tiles, {self.engine}, {self.workers} worker(s), {self.wall_s:.1f} s)")


def _todo(plan: AtlasPlan, work_dir: Path) -> list[Chunk]:
    return [c for c in plan.chunks if not chunk_path(work_dir, c.chunk_id).exists()]


def run_plan(plan: AtlasPlan, work_dir: str | Path, dom_path: str | Path, dem_path: str | Path, *,
             predictor=None, spec: PredictorSpec | None = None, settings: AtlasSettings = AtlasSettings(),
             scale: ScaleSettings = ScaleSettings(), engine: str = "inprocess", address: str | None = None,
             workers: int | None = None, cpus_per_worker: int = 1, ray_init: dict | None = None,
             assume_crs=None, progress: bool = True) -> RunStats:
    """Compute every chunk of ``plan`` whose file is not yet in ``work_dir``.

    ``inprocess``: one :class:`ChunkWorker` here, with ``predictor`` (or one built from
    ``spec``). ``ray``: ``workers`` actors, each building its own model from ``spec`` (one GPU
    per actor when the cluster has GPUs, else ``cpus_per_worker`` CPUs), on the cluster at
    ``address`` or on a local Ray started for this run (``ray_init``: extra ``ray.init``
    arguments, e.g. ``num_cpus``)."""
    from tqdm import tqdm

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    work_dir = Path(work_dir)
    (work_dir / "chunks").mkdir(parents=True, exist_ok=True)
    todo = _todo(plan, work_dir)
    stats = RunStats(engine, 0, len(plan.chunks), len(plan.chunks) - len(todo))
    t0 = time.perf_counter()
    bar = tqdm(total=sum(c.n_tiles for c in todo), desc="atlas tiles", unit="tile", disable=not progress)

    def done(chunk: Chunk, frame: pd.DataFrame) -> None:
        write_chunk(frame, chunk_path(work_dir, chunk.chunk_id))
        stats.chunks_computed += 1
        stats.tiles_computed += chunk.n_tiles
        bar.update(chunk.n_tiles)

    try:
        if engine == "inprocess":
            if predictor is None:
                if spec is None:
                    raise ValueError("run_plan needs a predictor or a PredictorSpec")
                predictor = spec.build() if todo else None
            stats.workers = 1
            if todo:
                with ChunkWorker(predictor, dom_path, dem_path, settings=settings, scale=scale,
                                 assume_crs=assume_crs) as worker:
                    stats.worker = worker.stats
                    for chunk, frame in worker.run_many(todo):
                        done(chunk, frame)
        else:
            if spec is None:
                raise ValueError("the ray engine builds one model per actor: it needs a PredictorSpec")
            stats.workers = _run_ray(todo, done, spec, dom_path, dem_path, settings=settings, scale=scale,
                                     address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                                     ray_init=ray_init or {}, assume_crs=assume_crs)
    finally:
        bar.close()
        stats.wall_s = time.perf_counter() - t0
    return stats


class _ChunkActor:
    """One model and one :class:`ChunkWorker` per Ray actor (made remote in :func:`_run_ray`)."""

    def __init__(self, spec: PredictorSpec, dom_path, dem_path, settings, scale, assume_crs, threads: int):
        import ray
        import torch

        torch.set_num_threads(max(1, threads))
        device = "cuda" if ray.get_gpu_ids() else "cpu"
        self.worker = ChunkWorker(spec.build(device), dom_path, dem_path, settings=settings, scale=scale,
                                  assume_crs=assume_crs)

    def run(self, chunk: Chunk) -> pd.DataFrame:
        return self.worker.run(chunk)


def _run_ray(todo: list[Chunk], done: Callable[[Chunk, pd.DataFrame], None], spec: PredictorSpec, dom_path,
             dem_path, *, settings, scale, address, workers, cpus_per_worker, ray_init, assume_crs) -> int:
    """Chunks go to idle actors one at a time; the driver writes each chunk file as it comes
    back (workers need the mosaics at the same path, not the work directory). Returns the
    number of actors."""
    if not todo:
        return 0
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, **ray_init)
    actors = []
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        n = workers or (gpus or max(1, int(resources.get("CPU", 1)) // cpus_per_worker))
        n = max(1, min(n, len(todo)))
        actor_cls = ray.remote(num_cpus=cpus_per_worker, num_gpus=1 if gpus else 0)(_ChunkActor)
        actors = [actor_cls.remote(spec, str(dom_path), str(dem_path), settings, scale, assume_crs, cpus_per_worker)
                  for _ in range(n)]
        queue_ = list(reversed(todo))
        pending = {}
        for actor in actors:
            if queue_:
                chunk = queue_.pop()
                pending[actor.run.remote(chunk)] = (actor, chunk)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            actor, chunk = pending.pop(ref)
            done(chunk, ray.get(ref))
            if queue_:
                nxt = queue_.pop()
                pending[actor.run.remote(nxt)] = (actor, nxt)
        return n
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()



# --------------------------------------------------------------------------- the whole atlas


def detect_mosaic_chunked(dom_path: str | Path, dem_path: str | Path, work_dir: str | Path, *, model: str,
                          predictor=None, spec: PredictorSpec | None = None,
                          settings: AtlasSettings = AtlasSettings(), scale: ScaleSettings = ScaleSettings(),
                          engine: str = "inprocess", address: str | None = None, workers: int | None = None,
                          cpus_per_worker: int = 1, ray_init: dict | None = None, assume_crs=None,
                          merge_rule=None, progress: bool = True) -> tuple[pd.DataFrame, RunStats]:
    """All craters of a mosaic through the plan: chunks computed (or reused from ``work_dir``)
    by ``engine``, then merged block by block. ``model`` names the model in the chunk ids
    (:func:`model_key`); ``merge_rule`` an :class:`etl.matching.MatchRule` (default: the
    project's). Returns the craters (the atlas's columns but ``crater_id``) and what
    the run did."""
    from detectron2_rfcn.atlas_merge import merge_plan

    plan = plan_mosaic(dom_path, dem_path, model, settings=settings, scale=scale, assume_crs=assume_crs)
    stats = run_plan(plan, work_dir, dom_path, dem_path, predictor=predictor, spec=spec, settings=settings,
                     scale=scale, engine=engine, address=address, workers=workers, cpus_per_worker=cpus_per_worker,
                     ray_init=ray_init, assume_crs=assume_crs, progress=progress)
    from etl.matching import PROJECT_RULE

    return merge_plan(plan, work_dir, settings=settings, scale=scale, rule=merge_rule or PROJECT_RULE), stats


def default_work_dir(out_path: str | Path) -> Path:
    """Where an atlas keeps its chunk files unless told otherwise: beside it, ``<out>.work``."""
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".work")


def write_mosaic_atlas_chunked(cfg, weights: str | None, dom_path: str | Path, dem_path: str | Path,
                               out_path: str | Path, *, run_name: str, work_dir: str | Path | None = None,
                               settings: AtlasSettings = AtlasSettings(), scale: ScaleSettings = ScaleSettings(),
                               engine: str = "inprocess", address: str | None = None, workers: int | None = None,
                               cpus_per_worker: int = 1, ray_init: dict | None = None, assume_crs=None,
                               merge_rule=None, progress: bool = True) -> tuple[pd.DataFrame, RunStats]:
    """:func:`detect_mosaic_chunked` with a Detectron2 model, then the atlas file with its
    provenance (as :func:`detectron2_rfcn.atlas.write_mosaic_atlas`). Returns the atlas as
    written and what the run did."""
    from etl.contracts import write_atlas

    work_dir = default_work_dir(out_path) if work_dir is None else Path(work_dir)
    craters, stats = detect_mosaic_chunked(
        dom_path, dem_path, work_dir, model=model_key(cfg, weights), spec=PredictorSpec(cfg, weights),
        settings=settings, scale=scale, engine=engine, address=address, workers=workers,
        cpus_per_worker=cpus_per_worker, ray_init=ray_init, assume_crs=assume_crs, merge_rule=merge_rule,
        progress=progress)
    provenance = atlas_provenance(cfg, weights, run_name, dom_path, dem_path)
    return write_atlas(craters.reset_index(drop=True), out_path, provenance), stats


__all__: Sequence[str] = [
    "AtlasPlan", "Chunk", "ChunkWorker", "DETECTION_COLUMNS", "ENGINES", "PredictorSpec", "RunStats", "ScaleSettings",
    "WorkerStats", "chunk_path", "default_work_dir", "describe_plan", "detect_mosaic_chunked", "file_identity",
    "model_key", "plan_atlas", "plan_mosaic", "read_chunk", "run_plan", "write_chunk", "write_mosaic_atlas_chunked"]
