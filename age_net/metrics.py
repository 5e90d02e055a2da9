"""Classification and calibration metrics of age predictions, and their pictures.

Overall accuracy, per-class recall, macro-F1 (over the classes present in the truth), the
confusion matrix (rows = truth, columns = prediction, oldest class first), and the expected
calibration error (ECE: the bin-weighted mean |accuracy - confidence| over equal-width
confidence bins, Guo et al. 2017).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from etl.age_classes import AGE_CLASS_CODES, NUM_AGE_CLASSES

__all__ = ["classification_metrics", "confusion_matrix", "expected_calibration_error", "plot_confusion",
           "plot_reliability"]


def confusion_matrix(y_true, y_pred, num_classes: int = NUM_AGE_CLASSES) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def expected_calibration_error(y_true, probs, bins: int = 10) -> float:
    probs = np.asarray(probs, dtype=float)
    y = np.asarray(y_true)
    if len(y) == 0:
        return float("nan")
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def classification_metrics(y_true, probs, bins: int = 10) -> dict:
    """Accuracy, per-class recall and F1 (NaN for a class absent from the truth), macro-F1,
    confusion matrix, ECE, negative log-likelihood and counts."""
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(axis=1) if len(y) else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(y, pred, probs.shape[1] if probs.ndim == 2 else NUM_AGE_CLASSES)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(support > 0, np.where(tp > 0, 2 * precision * recall / (precision + recall), 0.0), np.nan)
    present = support > 0
    nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)))) if len(y) else float("nan")
    codes = AGE_CLASS_CODES[:cm.shape[0]]
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
        "recall": {c: float(r) for c, r in zip(codes, recall)},
        "f1": {c: float(v) for c, v in zip(codes, f1)},
        "support": {c: int(s) for c, s in zip(codes, support)},
        "confusion": cm.tolist(),
        "ece": expected_calibration_error(y, probs, bins),
        "nll": nll,
    }


def plot_confusion(cm, path: str | Path, title: str = "") -> Path:
    """Confusion matrix (rows = truth) as a PNG; cells show counts, colour = row share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    codes = AGE_CLASS_CODES[:cm.shape[0]]
    ax.set_xticks(range(len(codes)), codes)
    ax.set_yticks(range(len(codes)), codes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8)
    ax.set_title(title or "confusion matrix", fontsize=9)
    return _save(fig, path)


def plot_reliability(y_true, probs, path: str | Path, bins: int = 10, title: str = "") -> Path:
    """Reliability diagram: accuracy against confidence per bin, with the ECE in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = np.asarray(probs, dtype=float)
    y = np.asarray(y_true)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    which = np.minimum((conf * bins).astype(int), bins - 1)
    centres = (np.arange(bins) + 0.5) / bins
    acc = np.array([correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])
    count = np.bincount(which, minlength=bins)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    ax.bar(centres, np.nan_to_num(acc), width=1.0 / bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for c, a, n in zip(centres, acc, count):
        if n:
            ax.text(c, min(np.nan_to_num(a) + 0.02, 0.97), str(n), ha="center", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title + ': ' if title else ''}ECE {expected_calibration_error(y, probs, bins):.3f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write a figure as PNG (folders made as needed) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
