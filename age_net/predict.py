"""Prediction: a trained age net over the craters of an atlas, written as the ages contract.

``load_age_model`` rebuilds the network from a checkpoint (its config, weights, input
normalisation, attribute schema); ``predict_crater_set`` gives calibrated probabilities;
``write_atlas_ages`` runs the whole thing for an atlas file and writes ``etl.contracts``'s age
table (five probabilities, class, entropy, keyed by the atlas's ``crater_id``) with provenance.
A model refuses attributes of another schema (``AttributeSchemaError`` says which names differ).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from age_net.config import CN, attribute_size_px, context_parts, resolve_device
from age_net.data import AgeCropDataset, CraterSet, InputStats, build_crater_set, context_source
from age_net.engine import CHECKPOINT_FORMAT
from age_net.model import AgeNet

__all__ = ["LoadedAgeModel", "load_age_model", "predict_crater_set", "write_atlas_ages"]


@dataclass
class LoadedAgeModel:
    model: AgeNet
    cfg: CN
    stats: InputStats
    schema: object          # etl.attributes.AttributeSchema the model was trained with
    provenance: dict

    @property
    def crater_material_units(self) -> bool:
        return bool(self.cfg.ATTRIBUTES.CRATER_MATERIAL_UNITS)

    @property
    def context(self) -> tuple[str, ...]:
        """ATTRIBUTES.CONTEXT parts the model was trained with (checkpoints made before the key: none)."""
        return context_parts(self.cfg)

    def check_schema(self, cs: CraterSet) -> CraterSet:
        """``cs`` with the model's attribute selection applied; raises ``AttributeSchemaError`` (naming the
        ATTRIBUTES.CONTEXT parts when that is the difference) unless it has the model's schema."""
        from etl.attributes import AttributeSchemaError

        cs = cs.select_attributes(self.attribute_selection)
        try:
            self.schema.check_matches(cs.schema)
        except AttributeSchemaError as exc:
            prefixes = {"superposition": "strat_sup_", "basins": "strat_basin_", "rays": "strat_ray_"}
            def parts(schema):
                return [part for part, pre in prefixes.items() if any(n.startswith(pre) for n in schema.names)]

            if parts(self.schema) != parts(cs.schema):
                raise AttributeSchemaError(
                    f"{exc}; the model reads the relative-age evidence {parts(self.schema) or 'none'} (its "
                    f"ATTRIBUTES.CONTEXT), the crater set has {parts(cs.schema) or 'none'}") from None
            raise
        return cs

    @property
    def attribute_selection(self) -> list[str]:
        """ATTRIBUTES.USE of the model's config (absent in checkpoints made before the key: all)."""
        return list(self.cfg.ATTRIBUTES.get("USE", []) or [])


def load_age_model(path: str | Path, device: str = "auto", network: str | None = None) -> LoadedAgeModel:
    """The predicting network of a checkpoint (the teacher for Mean-Teacher runs), in eval mode.

    ``network`` ("model": the student, or "teacher") loads that one instead, for diagnostics."""
    from etl.attributes import AttributeSchema

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not an age-net checkpoint (written by age_net.engine)")
    cfg = CN.load_cfg(ckpt["config"])
    cfg.MODEL.DEVICE = device
    resolve_device(cfg)
    schema = AttributeSchema.from_dict(ckpt["provenance"]["attribute_schema"])
    model = AgeNet.from_config(cfg, num_attributes=len(schema.names))
    network = network or ("teacher" if ckpt.get("predict_with") == "teacher" else "model")
    if ckpt.get(network) is None:
        raise ValueError(f"{path}: the checkpoint holds no {network!r} network")
    weights = ckpt[network]
    model.load_state_dict(weights)
    model.to(cfg.MODEL.DEVICE).eval()
    return LoadedAgeModel(model=model, cfg=cfg, stats=InputStats.from_dict(ckpt["input_stats"]), schema=schema,
                          provenance=dict(ckpt["provenance"]))


@torch.no_grad()
def predict_crater_set(loaded: LoadedAgeModel, cs: CraterSet, idx=None) -> np.ndarray:
    """Calibrated probabilities (n, 5) of craters ``idx`` (default: all) of ``cs``.

    Raises ``AttributeSchemaError`` when ``cs`` was measured with another attribute schema."""
    cs = loaded.check_schema(cs)
    idx = np.arange(len(cs)) if idx is None else np.asarray(idx)
    ds = AgeCropDataset(cs, loaded.stats, loaded.cfg, idx, augment=False)
    bs = int(loaded.cfg.SOLVER.EVAL_BATCH_SIZE)
    dev = loaded.model.device
    out = [loaded.model.predict_proba(ds.images[s:s + bs].to(dev), ds.attributes[s:s + bs].to(dev)).double().cpu()
           for s in range(0, len(ds), bs)]
    probs = torch.cat(out).numpy() if out else np.zeros((0, loaded.model.head.logits.out_features))
    return probs / probs.sum(axis=1, keepdims=True)  # float32 softmax sums to 1 within ~1e-7; make it exact


def write_atlas_ages(atlas_path: str | Path, model_path: str | Path, out_path: str | Path, *, dom_path=None,
                     dem_path=None, units=None, run_name: str | None = None, assume_crs=None, device: str = "auto",
                     albedo=None, context_craters=None, progress: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Ages of every measurable crater of an atlas file, written to ``out_path`` (ages contract).

    A model trained with ``ATTRIBUTES.CONTEXT`` gets the same relative-age evidence: superposition on
    the atlas's craters (plus ``context_craters``, a crater table, when given), rays on ``albedo``
    (default: ``dom_path``). Returns the table as written and one line per crater left out (not
    measurable: mosaic edge, nodata), which the caller reports."""
    from etl.contracts import ages_frame, read_atlas, write_ages

    loaded = load_age_model(model_path, device=device)
    atlas, atlas_prov = read_atlas(atlas_path)
    cfg = loaded.cfg
    needs = set(cfg.MODEL.IMAGE_CHANNELS) if cfg.MODEL.MODE != "attributes" else set()
    if "dom" in needs and dom_path is None:
        raise ValueError("this model reads a DOM channel: give --dom")
    if "dem" in needs and dem_path is None:
        raise ValueError("this model reads a DEM channel: give --dem")
    craters = atlas[["crater_id", "lon", "lat", "diameter_km"]]
    if len(craters) == 0:  # an empty atlas gets an empty (valid) age table
        written = write_ages(ages_frame([], np.zeros((0, 5))), out_path, _provenance(
            loaded, atlas_prov, model_path, out_path, run_name))
        return written, []
    units = context_source(units, loaded.context, albedo=albedo or dom_path, reference=context_craters,
                           min_diameter_km=cfg.ATTRIBUTES.get("CONTEXT_MIN_DIAMETER_KM", 20.0), assume_crs=assume_crs)
    cs = build_crater_set(craters, dom_path=dom_path, dem_path=dem_path, units=units, size_px=cfg.INPUT.SIZE_PX,
                          side_diameters=cfg.INPUT.SIDE_DIAMETERS,
                          crater_material_units=loaded.crater_material_units,
                          max_invalid_fraction=cfg.INPUT.MAX_INVALID_FRACTION, assume_crs=assume_crs,
                          label_column="", attribute_size_px=attribute_size_px(cfg), progress=progress)
    loaded.check_schema(cs)  # a clear error first
    idx = np.flatnonzero(cs.valid)
    probs = predict_crater_set(loaded, cs, idx)
    ages = ages_frame(craters["crater_id"].to_numpy()[idx], probs)
    written = write_ages(ages, out_path, _provenance(loaded, atlas_prov, model_path, out_path, run_name))
    skipped = [f"{craters['crater_id'].iloc[i]}: {cs.reasons[i]}" for i in np.flatnonzero(~cs.valid)]
    return written, skipped


def _provenance(loaded: LoadedAgeModel, atlas_prov, model_path, out_path, run_name: str | None):
    from etl.contracts import AgeProvenance
    from etl.provenance import code_version

    return AgeProvenance(run_name=run_name or Path(out_path).stem, atlas_run=atlas_prov.run_name,
                         model=f"{loaded.provenance['model']}@{Path(model_path).name}",
                         config_hash=loaded.provenance["config_hash"], code_version=code_version())
