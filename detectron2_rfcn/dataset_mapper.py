"""``CraterDatasetMapper``: multi-band float tiles -> Detectron2 model inputs.

Unlike Detectron2's ``DatasetMapper`` (8-bit RGB/BGR images through PIL), it reads every
band of a GeoTIFF with rasterio as float32 (no uint8 conversion, any number of channels)
and applies crater-preserving augmentations: flips and 90-degree rotations (exact: round
craters stay round), and, when configured, scale jitter (bilinear) and brightness/contrast of
the DOM channel only. What they do to the sun direction of a DOM channel is documented at
``INPUT.CRATER`` in ``config.py``.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import List, Optional, Sequence

import numpy as np
import rasterio
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

__all__ = ["CraterDatasetMapper", "Rot90Transform", "RandomRot90", "ScaleJitter", "ChannelIntensityTransform",
           "RandomChannelIntensity", "read_tile", "build_crater_augmentation", "relight_hillshade"]

logger = logging.getLogger(__name__)


def read_tile(path, num_channels: Optional[int] = None, fill_values: Optional[Sequence[float]] = None) -> np.ndarray:
    """All bands of a tile as float32 (C, H, W). Non-finite values (nodata) become
    ``fill_values`` per channel (the pixel mean: zero after normalisation), else 0."""
    try:
        with rasterio.open(path) as src:
            image = src.read(out_dtype="float32", masked=False)
            nodata = src.nodata
    except rasterio.errors.RasterioIOError as e:
        raise OSError(f"cannot read tile {path}: {e}") from e
    if num_channels is not None and image.shape[0] != num_channels:
        raise ValueError(f"tile {path} has {image.shape[0]} bands, the model expects {num_channels} "
                         f"(one per MODEL.PIXEL_MEAN entry)")
    bad = ~np.isfinite(image)
    if nodata is not None and np.isfinite(nodata):
        bad |= image == nodata
    if bad.any():
        fill = np.zeros(image.shape[0], np.float32) if fill_values is None else np.asarray(fill_values, np.float32)
        image = np.where(bad, fill[:, None, None], image)
    return image


class Rot90Transform(T.Transform):
    """Rotate an (H, W, ...) image by ``k`` x 90 degrees counter-clockwise (``np.rot90``);
    exact for pixels and for axis-aligned boxes."""

    def __init__(self, k: int, height: int, width: int):
        super().__init__()
        self._set_attributes(locals())
        self.k = k % 4

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        # Continuous pixel coordinates (x right, y down); one counter-clockwise quarter turn
        # of a W x H image maps (x, y) -> (y, W - x) and yields an H x W image.
        coords = np.asarray(coords, dtype=np.float64).copy()
        w, h = self.width, self.height
        for _ in range(self.k):
            coords = np.stack([coords[:, 1], w - coords[:, 0]], axis=1)
            w, h = h, w
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def inverse(self) -> T.Transform:
        h, w = (self.height, self.width) if self.k % 2 == 0 else (self.width, self.height)
        return Rot90Transform((4 - self.k) % 4, h, w)


class RandomRot90(T.Augmentation):
    """A uniformly random multiple of 90 degrees."""

    def get_transform(self, image):
        h, w = image.shape[:2]
        k = int(np.random.randint(4))
        return T.NoOpTransform() if k == 0 else Rot90Transform(k, h, w)


class ScaleJitter(T.Augmentation):
    """Resize by a factor drawn log-uniformly from ``[min_scale, max_scale]`` (bilinear, any
    number of float channels; boxes follow)."""

    def __init__(self, min_scale: float, max_scale: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        s = float(np.exp(np.random.uniform(np.log(self.min_scale), np.log(self.max_scale))))
        nh, nw = max(int(round(h * s)), 1), max(int(round(w * s)), 1)
        return T.NoOpTransform() if (nh, nw) == (h, w) else T.ResizeTransform(h, w, nh, nw)


class ChannelIntensityTransform(T.Transform):
    """``x -> mean + (x - mean) * contrast + brightness`` on some channels of an (H, W, C)
    image (the others, e.g. elevation, keep their values); geometry unchanged."""

    def __init__(self, channels: Sequence[int], contrast: float, brightness: float):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        img = np.array(img, dtype=np.float32, copy=True)
        for c in self.channels:
            band = img[..., c]
            mean = float(band.mean())
            img[..., c] = mean + (band - mean) * self.contrast + self.brightness
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class RandomChannelIntensity(T.Augmentation):
    """Contrast ~ U(1 - contrast, 1 + contrast) and brightness ~ U(-brightness, brightness) x the
    channels' std, on the given channels (the DOM: sensor gain and exposure vary)."""

    def __init__(self, channels: Sequence[int], brightness: float, contrast: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        std = float(image[..., list(self.channels)].std()) if len(self.channels) else 0.0
        return ChannelIntensityTransform(self.channels, float(np.random.uniform(1 - self.contrast, 1 + self.contrast)),
                                         float(np.random.uniform(-self.brightness, self.brightness)) * std)


def build_crater_augmentation(cfg, is_train: bool) -> List[T.Augmentation]:
    """Flips / quarter turns / scale jitter / DOM brightness and contrast from ``cfg.INPUT.CRATER``
    (training only; tests see tiles as they are)."""
    if not is_train:
        return []
    augs: List[T.Augmentation] = []
    c = cfg.INPUT.CRATER
    lo, hi = (float(v) for v in c.SCALE_JITTER)
    if not 0 < lo <= hi:
        raise ValueError(f"INPUT.CRATER.SCALE_JITTER must be (min, max) with 0 < min <= max, got {c.SCALE_JITTER}")
    if (lo, hi) != (1.0, 1.0):
        augs.append(ScaleJitter(lo, hi))
    dom = [i for i, name in enumerate(cfg.MODEL.RFCN.INPUT_CHANNELS) if name == "dom"]
    if (c.BRIGHTNESS > 0 or c.CONTRAST > 0) and dom:
        augs.append(RandomChannelIntensity(dom, float(c.BRIGHTNESS), float(c.CONTRAST)))
    if c.HFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=c.HFLIP_PROB, horizontal=True, vertical=False))
    if c.VFLIP_PROB > 0:
        augs.append(T.RandomFlip(prob=c.VFLIP_PROB, horizontal=False, vertical=True))
    if c.ROT90:
        augs.append(RandomRot90())
    return augs


def relight_hillshade(image: np.ndarray, channels: Sequence[str], record: dict, azimuth_deg: float) -> np.ndarray:
    """``image`` (C, H, W) with its "hillshade" channel recomputed for a sun at ``azimuth_deg``
    from its "dem" channel (min-max per tile) times the tile's ``dem_relief_m``, on pixels of
    ``pixel_size_m``; unchanged when the record lacks either (e.g. tiles of etl.tiling)."""
    from etl.rasters import DEFAULT_SUN_ELEVATION_DEG, hillshade, surface_gradient

    relief, size = record.get("dem_relief_m"), record.get("pixel_size_m")
    if not relief or not size:
        return image
    dem_m = image[list(channels).index("dem")].astype(np.float64) * float(relief)
    shade = hillshade(*surface_gradient(dem_m, float(size)), azimuth_deg=azimuth_deg,
                      elevation_deg=float(record.get("sun_elevation_deg") or DEFAULT_SUN_ELEVATION_DEG))
    image = image.copy()
    image[list(channels).index("hillshade")] = shade
    return image


class CraterDatasetMapper:
    """Maps one dataset dict (see ``detectron2_rfcn.data``) to ``{"image": (C, H, W) float32
    tensor, "instances", "height", "width", ...}``.

    Truncated craters (cut by the tile edge): ``truncated_policy`` "keep" trains on them as
    positives (the visible part), "drop" removes them. ``iscrowd`` objects are always dropped.
    """

    @configurable
    def __init__(self, is_train: bool, *, augmentations: List[T.Augmentation], num_channels: int,
                 fill_values: Sequence[float], truncated_policy: str = "keep",
                 channels: Sequence[str] = (), random_sun_azimuth: bool = False):
        if truncated_policy not in ("keep", "drop"):
            raise ValueError(f"INPUT.CRATER.TRUNCATED must be 'keep' or 'drop', got {truncated_policy!r}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.num_channels = num_channels
        self.fill_values = list(fill_values)
        self.truncated_policy = truncated_policy
        self.channels = list(channels)
        self.random_sun_azimuth = bool(random_sun_azimuth) and is_train
        if self.random_sun_azimuth and not {"hillshade", "dem"} <= set(self.channels):
            raise ValueError(f"INPUT.CRATER.RANDOM_SUN_AZIMUTH needs the 'hillshade' and 'dem' channels, "
                             f"the model has {self.channels}")
        logger.info("[CraterDatasetMapper] %s augmentations: %s", "train" if is_train else "test", augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        return {
            "is_train": is_train,
            "augmentations": build_crater_augmentation(cfg, is_train),
            "num_channels": len(cfg.MODEL.PIXEL_MEAN),
            "fill_values": cfg.MODEL.PIXEL_MEAN,
            "truncated_policy": cfg.INPUT.CRATER.TRUNCATED,
            "channels": list(cfg.MODEL.RFCN.INPUT_CHANNELS),
            "random_sun_azimuth": cfg.INPUT.CRATER.RANDOM_SUN_AZIMUTH,
        }

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_tile(dataset_dict["file_name"], self.num_channels, self.fill_values)
        if self.random_sun_azimuth:
            image = relight_hillshade(image, self.channels, dataset_dict, float(np.random.uniform(0.0, 360.0)))
        image = image.transpose(1, 2, 0)  # HWC, Detectron2's transform convention
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        h0, w0 = image.shape[:2]  # before the augmentations
        image = aug_input.image
        h, w = image.shape[:2]
        if dataset_dict.get("ignore_below_px"):
            # A size limit in pixels scales with the tile (scale jitter).
            dataset_dict["ignore_below_px"] = float(dataset_dict["ignore_below_px"]) * math.sqrt(h * w / (h0 * w0))
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        if not self.is_train:
            # Evaluators read the ground truth from the catalog, as Detectron2's do.
            dataset_dict.pop("annotations", None)
            return dataset_dict
        annos = [
            utils.transform_instance_annotations(obj, transforms, (h, w))
            for obj in dataset_dict.pop("annotations", [])
            if obj.get("iscrowd", 0) == 0 and not (self.truncated_policy == "drop" and obj.get("truncated", False))
        ]
        instances = utils.annotations_to_instances(annos, (h, w))
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
