"""Judging a VLM reward offline as a classifier of success (Baumli et al., arXiv 2312.09187, Sec. 4.2).

The reward ``r = 1[p > beta]`` is a binary classifier of ground-truth success; the paper picks beta from
precision-recall curves. Curves, average precision and ROC-AUC come from scikit-learn.

Thresholds follow the reward's strict comparison: a score s counts as positive when ``s > beta``. A beta
returned here is one of the observed scores (or just below the smallest), so ``scores > beta`` reproduces the
chosen point of the curve exactly on the calibration data.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (average_precision_score, confusion_matrix, f1_score, precision_recall_curve,
                             precision_score, recall_score, roc_auc_score)


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def check_scores(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 scores and int labels (1-D, same length, finite, both classes present).

    Raises:
        ValueError: empty input, shape mismatch, NaN/Inf scores, labels other than 0/1, a single class.
    """
    p, y = _as_numpy(probs), _as_numpy(labels)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(f"probs and labels must be 1-D, got shapes {p.shape} and {y.shape}")
    if p.size == 0:
        raise ValueError("probs and labels are empty")
    if p.shape != y.shape:
        raise ValueError(f"probs and labels differ in length: {p.size} vs {y.size}")
    if not np.issubdtype(p.dtype, np.number) or np.issubdtype(p.dtype, np.complexfloating):
        raise ValueError(f"probs must be real numbers, got dtype {p.dtype}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise ValueError(f"probs contain {int((~np.isfinite(p)).sum())} NaN/Inf values")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0/1 or bool, got values {np.unique(y)[:5].tolist()}")
    y = y.astype(np.int64)
    if y.min() == y.max():
        raise ValueError(f"labels hold a single class ({int(y[0])}): precision-recall and ROC need both "
                         "successes and failures")
    return p, y


def _strict_beta(scores: np.ndarray, t: float) -> float:
    """The largest observed score below t (so ``s > beta`` <=> ``s >= t`` on the data); below the smallest
    score, 0.0 when every score is positive (probabilities), else the next float32 down."""
    below = scores[scores < t]
    if below.size:
        return float(below.max())
    if scores.min() > 0:
        return 0.0
    return float(np.nextafter(np.float32(scores.min()), np.float32(-np.inf)))


def calibrate_threshold(probs, labels, *, target: str | float = "f1") -> float:
    """Choose beta of the binary reward ``1[p > beta]`` from labelled data.

    Args:
        probs: (M,) scores, e.g. the reward model's probabilities p(goal | frame); numpy, list or tensor.
        labels: (M,) ground-truth success, 0/1 or bool.
        target: "f1" for the beta of best F1 (ties: the lowest beta); a float in (0, 1] for the smallest beta
            whose precision reaches that value (the highest recall at that precision).

    Returns:
        beta (float).

    Raises:
        ValueError: invalid input (see :func:`check_scores`), a bad target, or a precision no beta reaches.
    """
    p, y = check_scores(probs, labels)
    precision, recall, thresholds = precision_recall_curve(y, p)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    if isinstance(target, str):
        if target != "f1":
            raise ValueError(f"target must be 'f1' or a precision in (0, 1], got {target!r}")
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
        i = int(np.argmax(f1))
    else:
        target = float(target)
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target precision must be in (0, 1], got {target}")
        reach = np.flatnonzero(precision >= target)
        if reach.size == 0:
            raise ValueError(f"no threshold reaches precision {target}; the best is {precision.max():.4f}")
        i = int(reach[np.argmin(thresholds[reach])])
    return _strict_beta(p, float(thresholds[i]))


def pr_curve(probs, labels, *, resolution: float = 0.002) -> tuple[np.ndarray, np.ndarray]:
    """Precision-recall curve over beta (scikit-learn's ``precision_recall_curve``), thinned for plots and JSON.

    A point is kept when its cell of side ``resolution`` in (precision, recall) differs from the cell of the
    point before it, and both endpoints are always kept, so the curve keeps its shape at any positive rate
    (thinning by index would keep only the recall-1 points when positives are rare: most thresholds lie
    among the negatives' scores below the lowest positive).

    Returns (precision, recall) float64 (P,), recall decreasing from 1 to 0 as in scikit-learn.
    Raises ValueError for invalid input (see :func:`check_scores`) or a resolution outside (0, 1).
    """
    if not 0.0 < resolution < 1.0:
        raise ValueError(f"resolution must be in (0, 1), got {resolution}")
    p, y = check_scores(probs, labels)
    precision, recall, _ = precision_recall_curve(y, p)
    cells = np.floor(np.stack([precision, recall]) / resolution)
    keep = np.flatnonzero(np.r_[True, (np.diff(cells, axis=1) != 0).any(0)])
    keep = np.union1d(keep, [len(precision) - 1])
    return precision[keep], recall[keep]


def classification_metrics(probs, labels, *, threshold: float | None = None) -> dict:
    """Offline metrics of a reward model's scores against ground-truth success.

    Args:
        probs: (M,) scores; labels: (M,) 0/1 or bool (see :func:`check_scores`).
        threshold: beta for the confusion counts (``p > beta`` is positive); None uses the best-F1 beta.

    Returns:
        dict with "count", "positives", "average_precision", "roc_auc", "best_f1_threshold", and at
        "threshold": "tp", "fp", "tn", "fn", "precision", "recall", "f1" (precision is 0 with no positives
        predicted). Plain Python numbers, JSON-serialisable.

    Raises:
        ValueError: invalid input.
    """
    p, y = check_scores(probs, labels)
    best = calibrate_threshold(p, y, target="f1")
    beta = best if threshold is None else float(threshold)
    pred = (p > beta).astype(np.int64)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "count": int(p.size), "positives": int(y.sum()),
        "average_precision": float(average_precision_score(y, p)), "roc_auc": float(roc_auc_score(y, p)),
        "best_f1_threshold": best, "threshold": beta,
        "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
    }
