"""Training the age net: spatial splits, supervised and Mean-Teacher steps, temperature scaling,
evaluation, checkpoints with provenance, repeated trials.

Mean Teacher (Tarvainen & Valpola 2017, as the original age network used it): the teacher's
weights are an exponential moving average of the student's; each step the student sees one
noisy view of a batch of labelled and unlabelled crops, the teacher another view of the same
crops, and the loss is the cross-entropy on the labelled ones plus w(t) times the mean squared
difference of the two softmax outputs (w ramps up along a sigmoid). A step of B crops costs the
student what a supervised step of B crops costs, plus one teacher forward pass.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from age_net.config import attribute_size_px, config_hash
from age_net.data import AgeCropDataset, CraterSet, InputStats, fit_input_stats
from age_net.metrics import classification_metrics, plot_confusion, plot_reliability
from age_net.model import AgeNet
from etl.age_classes import NUM_AGE_CLASSES

__all__ = ["AgeTrainer", "CHECKPOINT_FORMAT", "Split", "check_unlabelled_worlds", "ema_update", "fit_temperature",
           "label_subset", "model_name", "run_trials", "sigmoid_rampup", "softmax_mse", "spatial_split"]

CHECKPOINT_FORMAT = "deepcraters.age_net"
CHECKPOINT_VERSION = 1
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- splits


def spatial_split(lon_deg, lat_deg, *, block_deg: float, val_fraction: float, test_fraction: float, seed: int,
                  count=None) -> np.ndarray:
    """Assign every crater to "train", "val" or "test" by lon/lat block (side ``block_deg``).

    Blocks are shuffled with ``seed``; whole blocks go to test until it holds ``test_fraction``
    of the counted craters (``count``: a boolean mask, default all; e.g. the labelled ones), then
    to val, the rest to train. Neighbouring craters share terrain (and the DOM's sun, noise,
    units), so a random split of rows would flatter the model."""
    lon = np.asarray(lon_deg, dtype=float)
    lat = np.asarray(lat_deg, dtype=float)
    weight = np.ones(len(lon)) if count is None else np.asarray(count, dtype=float)
    bx = np.floor(lon / block_deg).astype(np.int64)
    by = np.floor(lat / block_deg).astype(np.int64)
    keys = bx * 1_000_003 + by
    blocks, inverse = np.unique(keys, return_inverse=True)
    per_block = np.bincount(inverse, weights=weight, minlength=len(blocks))
    order = np.random.default_rng(seed).permutation(len(blocks))
    total = weight.sum()
    assignment = np.empty(len(blocks), dtype=object)
    filled = {"test": 0.0, "val": 0.0}
    targets = {"test": test_fraction * total, "val": val_fraction * total}
    for b in order:
        for name in ("test", "val"):
            if targets[name] > 0 and filled[name] < targets[name]:
                assignment[b] = name
                filled[name] += per_block[b]
                break
        else:
            assignment[b] = "train"
    return assignment[inverse].astype(str)


def label_subset(labels: np.ndarray, candidates, fraction: float, seed: int) -> np.ndarray:
    """Indices of the labelled craters to train with: ``fraction`` of ``candidates`` per class
    (rounded up, at least one per class present), the rest become unlabelled."""
    candidates = np.asarray(candidates)
    if fraction >= 1.0:
        return candidates
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[candidates]):
        members = candidates[labels[candidates] == c]
        k = max(1, math.ceil(fraction * len(members)))
        keep.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(keep)) if keep else candidates[:0]


@dataclass
class Split:
    """Row indices into a crater set for one trial."""

    train: np.ndarray       # labelled training craters (labels used)
    unlabelled: np.ndarray  # training-region craters whose labels are not used (Mean Teacher)
    val: np.ndarray
    test: np.ndarray

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("train", "unlabelled", "val", "test")}

    @classmethod
    def from_dict(cls, d: dict) -> "Split":
        return cls(**{k: np.asarray(d[k], dtype=np.int64) for k in ("train", "unlabelled", "val", "test")})


def make_split(cs: CraterSet, cfg, seed: int) -> Split:
    """The trial's spatial split of ``cs``: only measurable craters; unlabelled craters (no
    class) join the unlabelled pool when they lie in training blocks. Craters of other worlds
    (``age_net.data.append_unlabelled``) are left out of the blocks, so the split of the crater
    set's own world is the same with or without them, and all join the unlabelled pool."""
    other = cs.other_world
    if (cs.labels[other] >= 0).any():
        raise ValueError("craters of another world carry labels: they may only be unlabelled data")
    own = np.flatnonzero(~other)
    where = np.full(len(cs), "other", dtype=object)
    where[own] = spatial_split(cs.craters["lon"].to_numpy()[own], cs.craters["lat"].to_numpy()[own],
                               block_deg=cfg.DATA.BLOCK_DEG, val_fraction=cfg.DATA.VAL_FRACTION,
                               test_fraction=cfg.DATA.TEST_FRACTION, seed=seed,
                               count=((cs.labels >= 0) & cs.valid)[own])
    labelled = (cs.labels >= 0) & cs.valid
    train_all = np.flatnonzero(labelled & (where == "train"))
    train = label_subset(cs.labels, train_all, cfg.DATA.LABEL_FRACTION, seed)
    unlabelled = np.setdiff1d(np.flatnonzero(cs.valid & ((where == "train") | other)), train)
    return Split(train=train, unlabelled=unlabelled, val=np.flatnonzero(labelled & (where == "val")),
                 test=np.flatnonzero(labelled & (where == "test")))


# --------------------------------------------------------------------------- mean teacher pieces


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t/T)^2) for t < T, 1 after (Laine & Aila 2017; Tarvainen & Valpola 2017)."""
    if length <= 0:
        return 1.0
    t = min(max(step, 0), length) / length
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def softmax_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of sum_k (softmax_s - softmax_t)^2 / K; no gradient into the teacher."""
    ps = torch.softmax(student_logits, dim=1)
    pt = torch.softmax(teacher_logits.detach(), dim=1)
    return ((ps - pt) ** 2).sum(dim=1).mean() / student_logits.shape[1]


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float, step: int) -> float:
    """teacher = a * teacher + (1 - a) * student over parameters, a = min(decay, 1 - 1/(step + 1)).

    Buffers (BatchNorm statistics, the temperature) are the teacher's own: it runs its own
    forward passes. Returns a."""
    alpha = min(decay, 1.0 - 1.0 / (step + 1))
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(alpha).add_(s.detach(), alpha=1.0 - alpha)
    return alpha


def fit_temperature(logits, labels) -> float:
    """T > 0 minimising the negative log-likelihood of softmax(logits / T) (Guo et al. 2017)."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


def model_name(cfg) -> str:
    """A readable model name, e.g. ``AgeNet/both/resnet18/dom+dem/S64``."""
    parts = ["AgeNet", cfg.MODEL.MODE]
    if cfg.MODEL.MODE != "attributes":
        parts += [cfg.MODEL.TRUNK, "+".join(cfg.MODEL.IMAGE_CHANNELS)]
    parts.append(f"S{cfg.INPUT.SIZE_PX}")
    if cfg.MEAN_TEACHER.ENABLED:
        parts.append("MT")
    return "/".join(parts)


class _EndlessSampler(torch.utils.data.Sampler):
    """Indices drawn with replacement forever (uniform, or with ``weights``), in chunks."""

    def __init__(self, n: int, weights, generator: torch.Generator, chunk: int = 4096):
        self.n = n
        self.weights = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.double)
        self.generator = generator
        self.chunk = chunk

    def __iter__(self):
        while True:
            if self.weights is None:
                draw = torch.randint(self.n, (self.chunk,), generator=self.generator)
            else:
                draw = torch.multinomial(self.weights, self.chunk, replacement=True, generator=self.generator)
            yield from draw.tolist()


def _forever(loader: DataLoader):
    while True:
        yield from loader


def _stack(items: list[dict], keys) -> dict:
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], torch.Tensor)
            else torch.as_tensor([it[k] for it in items]) for k in keys}


# --------------------------------------------------------------------------- trainer


class AgeTrainer:
    """Supervised or Mean-Teacher training of one AgeNet on one split of a crater set."""

    def __init__(self, cfg, cs: CraterSet, split: Split, output_dir: str | Path | None = None, *, seed: int = 0,
                 progress: bool = True):
        if cfg.MODEL.MODE != "attributes":
            if cs.size_px != cfg.INPUT.SIZE_PX or not math.isclose(cs.side_diameters, cfg.INPUT.SIDE_DIAMETERS):
                raise ValueError(f"crops are {cs.size_px} px of {cs.side_diameters} diameters, the config asks "
                                 f"INPUT.SIZE_PX {cfg.INPUT.SIZE_PX}, INPUT.SIDE_DIAMETERS {cfg.INPUT.SIDE_DIAMETERS}")
        measured_at = int(cs.crop_settings.get("attribute_size_px", cs.size_px))
        if measured_at != attribute_size_px(cfg):
            raise ValueError(f"attributes measured on {measured_at} px crops, the config asks INPUT.ATTRIBUTE_SIZE_PX "
                             f"{attribute_size_px(cfg)} (prediction would measure them there)")
        if len(split.train) == 0:
            raise ValueError("no labelled training craters in this split")
        self.cfg = cfg
        self.cs = cs = cs.select_attributes(cfg.ATTRIBUTES.USE)
        self.split = split
        self.seed = seed
        self.progress = progress
        self.output_dir = Path(output_dir) if output_dir else None
        self.device = torch.device(cfg.MODEL.DEVICE)
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        # Normalisation from every training-region crop: the unlabelled ones carry no label leak.
        self.stats = fit_input_stats(cs, np.concatenate([split.train, split.unlabelled]))
        self.model = AgeNet.from_config(cfg, num_attributes=len(cs.schema.names)).to(self.device)
        self.mean_teacher = bool(cfg.MEAN_TEACHER.ENABLED)
        self.teacher: AgeNet | None = None
        if self.mean_teacher:
            self.teacher = copy.deepcopy(self.model)
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.SOLVER.BASE_LR,
                                           weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        self.iteration = 0
        counts = np.bincount(cs.labels[split.train], minlength=NUM_AGE_CLASSES).astype(float)
        self.class_counts = counts
        inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        self.class_weights = torch.tensor(inv / inv[counts > 0].mean() if (counts > 0).any() else inv,
                                          dtype=torch.float32, device=self.device)
        self._loaders: dict | None = None

    # ------------------------------------------------------------------ data
    def _batch_sizes(self) -> tuple[int, int]:
        b = int(self.cfg.SOLVER.BATCH_SIZE)
        if not self.mean_teacher or len(self.split.unlabelled) == 0:
            return b, 0
        b_u = int(round(b * self.cfg.MEAN_TEACHER.UNLABELLED_FRACTION))
        return b - b_u, b_u

    def _make_loaders(self) -> dict:
        cfg, cs = self.cfg, self.cs
        views = 2 if self.mean_teacher else 1
        b_l, b_u = self._batch_sizes()
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.iteration)
        lab = AgeCropDataset(cs, self.stats, cfg, self.split.train, augment=True, views=views,
                             seed=self.seed * 7919 + self.iteration + 1)
        weights = None
        if cfg.SOLVER.CLASS_BALANCE == "sampler":
            weights = 1.0 / self.class_counts[cs.labels[self.split.train]]
        loaders = {"lab": _forever(DataLoader(lab, batch_size=b_l, sampler=_EndlessSampler(len(lab), weights, gen),
                                              collate_fn=list))}
        if b_u:
            unl = AgeCropDataset(cs, self.stats, cfg, self.split.unlabelled, augment=True, views=2,
                                 seed=self.seed * 7919 + self.iteration + 2)
            loaders["unl"] = _forever(DataLoader(unl, batch_size=b_u, sampler=_EndlessSampler(len(unl), None, gen),
                                                 collate_fn=list))
        return loaders

    # ------------------------------------------------------------------ schedule
    def learning_rate(self, it: int) -> float:
        cfg = self.cfg.SOLVER
        if it < cfg.WARMUP_ITERS:
            return cfg.BASE_LR * (it + 1) / cfg.WARMUP_ITERS
        t = (it - cfg.WARMUP_ITERS) / max(1, cfg.MAX_ITER - cfg.WARMUP_ITERS)
        return cfg.BASE_LR * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))

    def consistency_weight(self, it: int) -> float:
        mt = self.cfg.MEAN_TEACHER
        return mt.CONSISTENCY_WEIGHT * sigmoid_rampup(it, mt.RAMPUP_ITERS)

    def ema_decay(self, it: int) -> float:
        mt = self.cfg.MEAN_TEACHER
        after = float(mt.get("EMA_DECAY_AFTER_RAMPUP", 0.0))
        return after if after > 0 and it >= mt.RAMPUP_ITERS else float(mt.EMA_DECAY)

    # ------------------------------------------------------------------ steps
    def step(self) -> dict:
        """One optimisation step; returns its losses."""
        if self._loaders is None:
            self._loaders = self._make_loaders()
        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = self.learning_rate(self.iteration)
        lab = next(self._loaders["lab"])
        keys = ["image", "attributes", "label"] + (["image2", "attributes2"] if self.mean_teacher else [])
        lab_b = _stack(lab, keys)
        n_lab = len(lab)
        img, att = lab_b["image"], lab_b["attributes"]
        img2 = att2 = None
        if self.mean_teacher:
            img2, att2 = lab_b["image2"], lab_b["attributes2"]
            if "unl" in self._loaders:
                unl_b = _stack(next(self._loaders["unl"]), keys)
                img, att = torch.cat([img, unl_b["image"]]), torch.cat([att, unl_b["attributes"]])
                img2, att2 = torch.cat([img2, unl_b["image2"]]), torch.cat([att2, unl_b["attributes2"]])
        dev = self.device
        img, att = img.to(dev, non_blocking=True), att.to(dev, non_blocking=True)
        labels = lab_b["label"].to(dev)
        logits = self.model(img, att)
        weight = self.class_weights if self.cfg.SOLVER.CLASS_BALANCE == "loss" else None
        loss_cls = F.cross_entropy(logits[:n_lab], labels, weight=weight)
        losses = {"loss_cls": loss_cls}
        loss = loss_cls
        if self.mean_teacher:
            self.teacher.train()  # as the original: the teacher runs with its own noise (dropout, BN)
            with torch.no_grad():
                t_logits = self.teacher(img2.to(dev, non_blocking=True), att2.to(dev, non_blocking=True))
            w = self.consistency_weight(self.iteration)
            loss_cons = softmax_mse(logits, t_logits)
            losses["loss_consistency"] = loss_cons
            loss = loss + w * loss_cons
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.mean_teacher:
            ema_update(self.teacher, self.model, self.ema_decay(self.iteration), self.iteration)
        self.iteration += 1
        return {k: float(v.detach()) for k, v in losses.items()}

    def train(self, resume: bool = False) -> "AgeTrainer":
        """Train to ``SOLVER.MAX_ITER`` (continuing from ``last_checkpoint.pth`` when ``resume``)."""
        if resume and self.output_dir and (self.output_dir / "last_checkpoint.pth").exists():
            self.load(self.output_dir / "last_checkpoint.pth")
        max_iter = int(self.cfg.SOLVER.MAX_ITER)
        period = int(self.cfg.SOLVER.CHECKPOINT_PERIOD)
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=max_iter, initial=self.iteration, desc="age net" + (" (MT)" if self.mean_teacher else ""),
                       unit="step", dynamic_ncols=True)
        while self.iteration < max_iter:
            losses = self.step()
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in losses.items()}, refresh=False)
            if self.output_dir and period > 0 and self.iteration % period == 0 and self.iteration < max_iter:
                self.save(self.output_dir / "last_checkpoint.pth")
        if bar is not None:
            bar.close()
        return self

    # ------------------------------------------------------------------ inference
    @property
    def predictor(self) -> AgeNet:
        """The network that predicts: the teacher under Mean Teacher (PREDICT_WITH_TEACHER), else the student."""
        if self.teacher is not None and self.cfg.MEAN_TEACHER.PREDICT_WITH_TEACHER:
            return self.teacher
        return self.model

    @torch.no_grad()
    def logits(self, idx) -> np.ndarray:
        """Uncalibrated logits of craters ``idx`` (no augmentation)."""
        net = self.predictor
        net.eval()
        ds = AgeCropDataset(self.cs, self.stats, self.cfg, idx, augment=False)
        bs = int(self.cfg.SOLVER.EVAL_BATCH_SIZE)
        out = []
        for s in range(0, len(ds), bs):
            img = ds.images[s:s + bs].to(self.device)
            att = ds.attributes[s:s + bs].to(self.device)
            out.append(net(img, att).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, NUM_AGE_CLASSES), np.float32)

    def probabilities(self, idx) -> np.ndarray:
        logits = torch.as_tensor(self.logits(idx))
        return torch.softmax(logits / self.predictor.temperature.cpu(), dim=1).numpy()

    def fit_temperature(self, idx) -> float:
        """Temperature scaling on craters ``idx`` (validation); sets the predictor's temperature."""
        if len(idx) == 0 or not self.cfg.CALIBRATION.TEMPERATURE_SCALING:
            return float(self.predictor.temperature)
        t = fit_temperature(self.logits(idx), self.cs.labels[idx])
        self.predictor.temperature.fill_(t)
        return t

    def evaluate(self, idx, name: str = "test", figures: bool = True) -> dict:
        """Metrics of the calibrated predictions on craters ``idx`` (and PNGs in the output dir)."""
        probs = self.probabilities(idx)
        labels = self.cs.labels[idx]
        m = classification_metrics(labels, probs, bins=int(self.cfg.CALIBRATION.BINS))
        m["temperature"] = float(self.predictor.temperature)
        if figures and self.output_dir and len(idx):
            plot_confusion(m["confusion"], self.output_dir / f"confusion_{name}.png",
                           title=f"{name}: accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
            plot_reliability(labels, probs, self.output_dir / f"reliability_{name}.png",
                             bins=int(self.cfg.CALIBRATION.BINS), title=name)
        return m

    # ------------------------------------------------------------------ checkpoints
    def provenance(self) -> dict:
        from etl.provenance import code_version

        return {
            "model": model_name(self.cfg),
            "config_hash": config_hash(self.cfg),
            "code_version": code_version(),
            "attribute_schema": self.cs.schema.to_dict(),
            "crop_settings": dict(self.cs.crop_settings),
            "sources": dict(self.cs.sources),
            "trained_on": {"labelled": int(len(self.split.train)), "unlabelled": int(len(self.split.unlabelled)),
                           "seed": int(self.seed)},
        }

    def state(self, final: bool = False) -> dict:
        d = {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "config": self.cfg.dump(), "provenance": self.provenance(),
            "input_stats": self.stats.to_dict(), "iteration": self.iteration,
            "model": self.model.state_dict(),
            "teacher": self.teacher.state_dict() if self.teacher is not None else None,
            "predict_with": "teacher" if self.predictor is self.teacher else "model",
        }
        if not final:
            d.update(optimizer=self.optimizer.state_dict(), split=self.split.to_dict(),
                     torch_rng=torch.get_rng_state())
        return d

    def save(self, path: str | Path, final: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state(final), tmp)
        tmp.replace(path)  # atomic: a killed run never leaves half a checkpoint
        return path

    def load(self, path: str | Path) -> None:
        """Resume from a checkpoint written by ``save`` with the same config."""
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not an age-net checkpoint")
        if ckpt["provenance"]["config_hash"] != config_hash(self.cfg):
            raise ValueError(f"{path}: written with another config (hash {ckpt['provenance']['config_hash']}, "
                             f"now {config_hash(self.cfg)}); start a fresh OUTPUT_DIR or use the same config")
        self.cs.schema.check_matches(type(self.cs.schema).from_dict(ckpt["provenance"]["attribute_schema"]))
        self.model.load_state_dict(ckpt["model"])
        if self.teacher is not None and ckpt.get("teacher") is not None:
            self.teacher.load_state_dict(ckpt["teacher"])
        if "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if "split" in ckpt:
            self.split = Split.from_dict(ckpt["split"])
        self.stats = InputStats.from_dict(ckpt["input_stats"])
        if "torch_rng" in ckpt:
            torch.set_rng_state(ckpt["torch_rng"].cpu())
        self.iteration = int(ckpt["iteration"])
        self._loaders = None  # rebuilt, seeded by the iteration reached


# --------------------------------------------------------------------------- trials


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"),
            "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "values": [float(x) for x in values]}


def run_trials(cfg, cs: CraterSet, *, resume: bool = False, progress: bool = True, extra_test: dict | None = None,
               log=print) -> dict:
    """``cfg.TRIALS`` trainings, trial i with seed ``cfg.SEED + i`` (its own spatial split, label
    subset, initialisation); each fits its temperature on its val split and is evaluated on its test
    split (and on every crater set of ``extra_test``, name -> CraterSet, e.g. an unseen world).
    Writes ``OUTPUT_DIR/trial<i>/`` (model_final.pth, metrics.json, PNGs) and
    ``OUTPUT_DIR/summary.json`` (per-trial metrics, mean and std). Returns the summary."""
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.dump())
    trials = []
    for t in range(int(cfg.TRIALS)):
        seed = int(cfg.SEED) + t
        tdir = out / f"trial{t}"
        metrics_path = tdir / "metrics.json"
        if resume and metrics_path.exists():
            trials.append(json.loads(metrics_path.read_text()))
            log(f"trial {t}: done before, metrics reused")
            continue
        split = make_split(cs, cfg, seed)
        trainer = AgeTrainer(cfg, cs, split, tdir, seed=seed, progress=progress)
        log(f"trial {t} (seed {seed}): {len(split.train)} labelled + {len(split.unlabelled)} unlabelled training "
            f"craters, {len(split.val)} val, {len(split.test)} test; {model_name(cfg)}")
        t0 = time.perf_counter()
        trainer.train(resume=resume)
        seconds = time.perf_counter() - t0
        temperature = trainer.fit_temperature(trainer.split.val)
        result = {"trial": t, "seed": seed, "train_seconds": seconds, "temperature": temperature,
                  "n_train": int(len(trainer.split.train)), "n_unlabelled": int(len(trainer.split.unlabelled)),
                  "val": trainer.evaluate(trainer.split.val, "val", figures=False),
                  "test": trainer.evaluate(trainer.split.test, "test")}
        _write_predictions(trainer, trainer.split.test, tdir / "test_predictions.csv")
        for name, other in (extra_test or {}).items():
            result[name] = _evaluate_on(trainer, other, name)
        trainer.save(tdir / "model_final.pth", final=True)
        metrics_path.write_text(json.dumps(result, indent=1))
        log(f"trial {t}: test accuracy {result['test']['accuracy']:.3f}, macro-F1 {result['test']['macro_f1']:.3f}, "
            f"ECE {result['test']['ece']:.3f} (T = {temperature:.2f}, {seconds:.0f} s)"
            + "".join(f"; {n} accuracy {result[n]['accuracy']:.3f}" for n in (extra_test or {})))
        trials.append(result)
    summary = {"model": model_name(cfg), "config_hash": config_hash(cfg), "trials": trials}
    for part in ["test", *(extra_test or {})]:
        summary[part] = {k: _mean_std([tr[part][k] for tr in trials]) for k in ("accuracy", "macro_f1", "ece")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _write_predictions(trainer: AgeTrainer, idx, path: Path) -> None:
    """Per-crater calibrated predictions (row in the crater set, position, size, truth, probabilities)."""
    import pandas as pd

    from etl.age_classes import AGE_CLASS_CODES, PROB_COLUMNS

    probs = trainer.probabilities(idx)
    craters = trainer.cs.craters.iloc[idx]
    frame = pd.DataFrame({"index": np.asarray(idx), "lon": craters["lon"].to_numpy(), "lat": craters["lat"].to_numpy(),
                          "diameter_km": craters["diameter_km"].to_numpy(),
                          "true_class": [AGE_CLASS_CODES[k] for k in trainer.cs.labels[idx]],
                          "predicted_class": [AGE_CLASS_CODES[k] for k in probs.argmax(axis=1)]})
    for j, col in enumerate(PROB_COLUMNS):
        frame[col] = probs[:, j]
    frame.to_csv(path, index=False)


def _evaluate_on(trainer: AgeTrainer, other: CraterSet, name: str) -> dict:
    """Metrics of a trained model on every labelled, measurable crater of another crater set."""
    other = other.select_attributes(trainer.cfg.ATTRIBUTES.USE)
    trainer.cs.schema.check_matches(other.schema)
    idx = np.flatnonzero((other.labels >= 0) & other.valid)
    saved = trainer.cs
    trainer.cs = other
    try:
        return trainer.evaluate(idx, name, figures=True)
    finally:
        trainer.cs = saved


# --------------------------------------------------------------------------- command line


def _read_craters(path: str | Path) -> "pd.DataFrame":
    """A crater table: an atlas GeoPackage (its contract) or a catalogue (``etl.catalogue``, the one reader:
    CSV, Parquet, vector files; every problem listed by row and field) with lon, lat, diameter_km and
    optionally age_class, where an empty age means unlabelled (class index -1). Rows are kept as
    given (near-duplicates too): the age net dates every listed crater."""
    path = Path(path)
    if path.suffix.lower() == ".gpkg":
        from etl.contracts import read_atlas

        return read_atlas(path)[0]
    from etl.catalogue import read_catalogue

    return read_catalogue(path, on_duplicate="keep", allow_unlabelled=True)


def crater_set_from_sources(cfg, *, world=None, catalogue=None, dom=None, dem=None, units=None, unlabelled=None,
                            assume_crs=None, cache_dir=None, albedo=None, context_craters=None,
                            progress: bool = True, log=print) -> CraterSet:
    """Crops and attributes of a labelled catalogue (``age_class`` column) plus optional unlabelled
    craters (an atlas or table; label -1), from a synthetic world directory or explicit mosaics.
    ``ATTRIBUTES.CONTEXT`` adds relative-age evidence (``age_net.data.context_source``): its rays
    read ``albedo`` (default: the DOM), its superposition the crater set's own craters plus
    ``context_craters`` (a crater table) when given.
    Cached as ``cache_dir/craters_<hash>.npz`` (the hash covers inputs and crop settings)."""
    import hashlib

    import pandas as pd

    from age_net.config import context_parts
    from age_net.data import build_crater_set, context_source, unit_source

    if world is not None:
        world = Path(world)
        catalogue = catalogue or world / "catalogue.csv"
        dom = dom or world / "dom.tif"
        dem = dem or world / "dem.tif"
        units = units if units is not None else world
    if catalogue is None:
        raise ValueError("give a synthetic world directory or a labelled catalogue")
    channels = set(cfg.MODEL.IMAGE_CHANNELS)
    units_key = units.describe() if hasattr(units, "describe") else str(units)
    if context_parts(cfg):
        units = context_source(unit_source(units), cfg, albedo=albedo or dom, reference=context_craters,
                               min_diameter_km=cfg.ATTRIBUTES.CONTEXT_MIN_DIAMETER_KM, assume_crs=assume_crs)
        inputs = [q for q in (albedo or dom, context_craters) if isinstance(q, (str, Path)) and str(q)]
        units_key = [units.describe(), [str(q) for q in inputs], [Path(q).stat().st_mtime for q in inputs]]
    from etl.attributes import ATTRIBUTE_DEFINITIONS_VERSION

    # The attributes' definitions version is in the key: a cache made by older attribute code is not reused.
    key = json.dumps([ATTRIBUTE_DEFINITIONS_VERSION, str(catalogue), str(dom), str(dem), units_key, str(unlabelled),
                      cfg.INPUT.SIZE_PX, attribute_size_px(cfg), cfg.INPUT.SIDE_DIAMETERS,
                      cfg.INPUT.MAX_INVALID_FRACTION, cfg.ATTRIBUTES.CRATER_MATERIAL_UNITS, sorted(channels),
                      [Path(p).stat().st_mtime for p in (catalogue, dom, dem) if p]])
    cache = Path(cache_dir) / f"craters_{hashlib.sha256(key.encode()).hexdigest()[:12]}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        log(f"crater crops and attributes from {cache}")
        return CraterSet.load(cache)
    craters = _read_craters(catalogue)
    if "age_class" not in craters.columns:
        raise ValueError(f"{catalogue}: no age_class column (labels)")
    if unlabelled is not None:
        extra = _read_craters(unlabelled)[["lon", "lat", "diameter_km"]].copy()
        extra["age_class"] = None
        craters = pd.concat([craters, extra], ignore_index=True)
    cs = build_crater_set(craters, dom_path=dom, dem_path=dem, units=unit_source(units), size_px=cfg.INPUT.SIZE_PX,
                          side_diameters=cfg.INPUT.SIDE_DIAMETERS,
                          crater_material_units=cfg.ATTRIBUTES.CRATER_MATERIAL_UNITS,
                          max_invalid_fraction=cfg.INPUT.MAX_INVALID_FRACTION, assume_crs=assume_crs,
                          attribute_size_px=attribute_size_px(cfg), progress=progress)
    log(f"{len(cs)} craters ({int((cs.labels >= 0).sum())} labelled), {int(cs.valid.sum())} measurable, "
        f"{cs.attributes.shape[1]} attributes (schema {cs.schema.version})")
    if cache is not None:
        cs.save(cache)
    return cs


def _world_identity(world: str | Path) -> tuple[str, str]:
    """What makes a synthetic world the same world wherever it lies: the generator's parameters
    (``world.json``, seed included) and the bytes of its catalogue ('' where a file is absent)."""
    import hashlib

    world = Path(world)
    params = ""
    if (world / "world.json").exists():
        params = json.dumps(json.loads((world / "world.json").read_text()).get("params", {}), sort_keys=True)
    cat = world / "catalogue.csv"
    digest = hashlib.sha256(cat.read_bytes()).hexdigest() if cat.exists() else ""
    return params, digest


def check_unlabelled_worlds(unlabelled_worlds, *, world=None, test_world=None) -> list[Path]:
    """The worlds whose craters are extra unlabelled data, refused (ValueError) when one of them is
    the world under training or the test world: the same directory, the same generator parameters
    (the same world written elsewhere), or the same catalogue. Training on the test world's craters,
    even without their labels, would leak it into the model that is evaluated there."""
    out = []
    forbidden = {"the test world (--test-world)": test_world, "the training world (--world)": world}
    for w in unlabelled_worlds or []:
        w = Path(w)
        if not (w / "catalogue.csv").exists():
            raise ValueError(f"unlabelled world {w}: no catalogue.csv (a 'deepcraters synth' directory is needed)")
        params, digest = _world_identity(w)
        for what, other in forbidden.items():
            if other is None:
                continue
            o_params, o_digest = _world_identity(other)
            if w.resolve() == Path(other).resolve() or (params and params == o_params) or digest == o_digest:
                raise ValueError(f"unlabelled world {w} is {what} {other}: its craters may not be training data")
        if any(w.resolve() == q.resolve() for q in out):
            raise ValueError(f"unlabelled world {w} given twice")
        out.append(w)
    return out


def add_context_options(parser) -> None:
    """The inputs of ``ATTRIBUTES.CONTEXT`` (``--albedo``, ``--context-craters``), shared by training and
    ``deepcraters ages``: the parts themselves come from the config (the model's, at prediction)."""
    parser.add_argument("--albedo", default=None,
                        help="albedo raster read by the 'rays' part of ATTRIBUTES.CONTEXT (default: the DOM)")
    parser.add_argument("--context-craters", default=None, metavar="TABLE",
                        help="crater table (lon, lat, diameter_km; catalogue or atlas) that the 'superposition' "
                             "part of ATTRIBUTES.CONTEXT also measures each crater against (default: only the "
                             "craters being measured); e.g. the training catalogue when dating an atlas")


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="train_age_net.py",
        description="Train the dual-channel crater age network (supervised or Mean Teacher, by the config) on "
                    "a labelled crater catalogue with spatially held-out val/test regions, repeated over "
                    "cfg.TRIALS seeds; writes checkpoints, metrics.json, confusion and reliability PNGs and "
                    "summary.json (mean and std over trials) under OUTPUT_DIR.",
        epilog="example:\n  python tools/train_age_net.py --config-file configs/age_net/agenet_mt_R18_S32_cpu.yaml \\\n"
               "      --world data/world OUTPUT_DIR output/age_mt DATA.LABEL_FRACTION 0.1 TRIALS 5\n"
               "with relative-age evidence (superposed craters, albedo rays; the model records it):\n"
               "  python tools/train_age_net.py --config-file configs/age_net/agenet_attr_sigma_cpu.yaml \\\n"
               "      --world data/world ATTRIBUTES.CONTEXT superposition,rays OUTPUT_DIR output/age_ctx",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, help="age-net YAML (configs/age_net/...)")
    p.add_argument("--world", default=None, help="synthetic world directory (catalogue.csv, dom.tif, dem.tif, "
                                                 "units.tif), as written by 'deepcraters synth'")
    p.add_argument("--catalogue", default=None, help="labelled craters: lon, lat, diameter_km, age_class")
    p.add_argument("--dom", default=None, help="orthophoto mosaic (GeoTIFF, lunar CRS)")
    p.add_argument("--dem", default=None, help="elevation mosaic, metres (GeoTIFF, lunar CRS)")
    p.add_argument("--units", default=None, help="geologic units: a world directory, units GeoTIFF or label-point CSV")
    p.add_argument("--unlabelled", default=None, help="extra craters without labels (atlas .gpkg or table) for "
                                                      "Mean Teacher")
    p.add_argument("--unlabelled-world", action="append", default=[], metavar="DIR",
                   help="another synthetic world whose craters (catalogue positions, labels dropped) are extra "
                        "unlabelled data for Mean Teacher, measured on that world's own mosaics; repeatable; "
                        "refused when it is the training or the test world")
    p.add_argument("--test-world", default=None, help="a synthetic world the model never trains on: every "
                                                      "labelled crater is also evaluated there ('unseen')")
    p.add_argument("--assume-crs", default=None, help="lunar CRS for mosaics that lack one")
    add_context_options(p)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR's checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("opts", nargs="...", help="config overrides, KEY VALUE pairs")
    return p


def main(argv=None) -> int:
    from age_net.config import get_age_cfg

    args = build_parser().parse_args(argv)
    cfg = get_age_cfg(args.config_file, args.opts)
    cfg.freeze()
    out = Path(cfg.OUTPUT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.quiet
    cs = crater_set_from_sources(cfg, world=args.world, catalogue=args.catalogue, dom=args.dom, dem=args.dem,
                                 units=args.units, unlabelled=args.unlabelled, assume_crs=args.assume_crs,
                                 cache_dir=out, albedo=args.albedo, context_craters=args.context_craters,
                                 progress=progress)
    worlds = check_unlabelled_worlds(args.unlabelled_world, world=args.world, test_world=args.test_world)
    if worlds:
        from age_net.data import append_unlabelled

        cs = append_unlabelled(cs, {str(w): crater_set_from_sources(cfg, world=w, cache_dir=out, progress=progress)
                                    for w in worlds})
        print(f"{int(cs.other_world.sum())} craters of {len(worlds)} other world(s) added as unlabelled data")
    extra = {}
    if args.test_world:
        # Another world: its own DOM is the albedo, its own catalogue the crater table.
        extra["unseen"] = crater_set_from_sources(cfg, world=args.test_world, cache_dir=out, progress=progress)
    summary = run_trials(cfg, cs, resume=args.resume, progress=progress, extra_test=extra)
    for part in ["test", *extra]:
        s = summary[part]
        print(f"{part}: accuracy {s['accuracy']['mean']:.3f} +- {s['accuracy']['std']:.3f}, macro-F1 "
              f"{s['macro_f1']['mean']:.3f} +- {s['macro_f1']['std']:.3f}, ECE {s['ece']['mean']:.3f} "
              f"over {len(summary['trials'])} trial(s)")
    print(f"summary: {out / 'summary.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
