"""calibrate_threshold and classification_metrics against brute force over every threshold and scikit-learn."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from sklearn.metrics import average_precision_score, roc_auc_score

from vlmreward.metrics import calibrate_threshold, classification_metrics


def confusion(p, y, beta):
    pred = p > beta
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    return tp, fp, fn, len(y) - tp - fp - fn


def brute_force(p, y):
    """Every distinct rule "p > beta" over the data: (beta, precision, recall, f1)."""
    betas = [np.nextafter(p.min(), -np.inf)] + sorted(set(p.tolist()))[:-1]
    rows = []
    for beta in betas:
        tp, fp, fn, _ = confusion(p, y, beta)
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn)
        rows.append((beta, prec, rec, 2 * prec * rec / (prec + rec) if prec + rec else 0.0))
    return rows


scores = st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 1.0]) | st.floats(0, 1, width=32),
                            st.booleans()), min_size=2, max_size=40)


@settings(max_examples=150, deadline=None)
@given(scores)
def test_best_f1_matches_brute_force(data):
    p = np.array([d[0] for d in data], np.float32).astype(np.float64)
    y = np.array([d[1] for d in data], np.int64)
    if y.min() == y.max():
        return
    beta = calibrate_threshold(p, y)
    tp, fp, fn, _ = confusion(p, y, beta)
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert f1 == pytest.approx(max(r[3] for r in brute_force(p, y)), abs=1e-12)
    assert np.float32(beta) == beta  # exact in float32, like the kernel's probabilities


@settings(max_examples=150, deadline=None)
@given(scores, st.sampled_from([0.5, 0.75, 0.9, 1.0]))
def test_target_precision_is_the_smallest_beta_reaching_it(data, target):
    p = np.array([d[0] for d in data], np.float32).astype(np.float64)
    y = np.array([d[1] for d in data], np.int64)
    if y.min() == y.max():
        return
    reaching = [r for r in brute_force(p, y) if r[1] >= target]
    if not reaching:
        with pytest.raises(ValueError, match="no threshold reaches"):
            calibrate_threshold(p, y, target=target)
        return
    beta = calibrate_threshold(p, y, target=target)
    tp, fp, fn, _ = confusion(p, y, beta)
    assert tp / (tp + fp) >= target
    best = min(reaching, key=lambda r: r[0])
    assert confusion(p, y, beta) == confusion(p, y, best[0])  # same rule as the smallest reaching beta


def test_metrics_dict_agrees_with_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 500), 0, 1).astype(np.float32)
    m = classification_metrics(torch.from_numpy(p), torch.from_numpy(y.astype(bool)), threshold=0.5)
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    tp, fp, fn, tn = confusion(p.astype(np.float64), y, 0.5)
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (tp, fp, fn, tn)
    assert m["count"] == 500 and m["positives"] == int(y.sum())
    assert m["precision"] == pytest.approx(tp / (tp + fp)) and m["recall"] == pytest.approx(tp / (tp + fn))
    assert m["best_f1_threshold"] == calibrate_threshold(p, y)
    assert classification_metrics(p, y)["threshold"] == m["best_f1_threshold"]
    assert 0.75 < m["roc_auc"] < 0.95  # the scores carry signal, the metric is not trivial


@pytest.mark.parametrize("probs, labels, match", [
    ([], [], "empty"),
    ([0.1, float("nan")], [0, 1], "NaN"),
    ([0.1, 0.2], [1, 1], "single class"),
    ([0.1, 0.2], [0, 2], "0/1"),
    ([0.1, 0.2, 0.3], [0, 1], "differ in length"),
    ([[0.1, 0.2]], [[0, 1]], "1-D"),
])
def test_bad_input(probs, labels, match):
    with pytest.raises(ValueError, match=match):
        calibrate_threshold(probs, labels)
    with pytest.raises(ValueError, match=match):
        classification_metrics(probs, labels)


def test_bad_target():
    with pytest.raises(ValueError, match="target"):
        calibrate_threshold([0.1, 0.9], [0, 1], target="auc")
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        calibrate_threshold([0.1, 0.9], [0, 1], target=1.5)


def test_pr_curve_keeps_its_shape_when_positives_are_rare():
    from sklearn.metrics import precision_recall_curve

    from vlmreward.metrics import pr_curve
    rng = np.random.default_rng(0)
    y = np.zeros(100_000, dtype=bool)
    y[rng.choice(y.size, 25, replace=False)] = True  # 0.025% positives
    # positives rank high (a good reward model): the recall levels lie among the top scores
    p = np.where(y, rng.normal(0.85, 0.05, y.size), rng.normal(0.3, 0.15, y.size)).astype(np.float32)
    precision, recall = pr_curve(p, y)
    full_p, full_r, _ = precision_recall_curve(y, p)
    assert len(precision) < len(full_p) / 20  # thinned...
    assert (precision[0], recall[0], precision[-1], recall[-1]) == (full_p[0], full_r[0], full_p[-1], full_r[-1])
    # ... but every recall level of the curve is still there, each within one cell of its best precision
    assert set(np.unique(recall)) == set(np.unique(full_r))
    assert (recall < 1).sum() > 20
    for level in np.unique(full_r):
        kept = precision[recall == level]
        assert np.abs(kept.max() - full_p[full_r == level].max()) <= 0.002 + 1e-12
    # decimation by index (the old plot) keeps no point below recall 1 here
    assert (full_r[::len(full_r) // 200] == 1).mean() > 0.99
    with pytest.raises(ValueError, match="resolution"):
        pr_curve(p, y, resolution=0)
