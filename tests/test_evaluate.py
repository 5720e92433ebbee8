"""vlmreward evaluate: metrics against scikit-learn, outputs, errors, the shipped default model."""
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from vlmreward.evaluation import GROUPS, evaluate_reward_model as evaluate
from vlmreward.models import DEFAULT_MODEL_DIR

CARTPOLE = "vlmreward/CartPoleUpright-v0"


@pytest.fixture(scope="module")
def tiny_report(tiny_clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate(str(tiny_clip_dir), CARTPOLE, num_negatives=2, scale=0.1, out=out,
                    data_dir=out / "data", progress=False, return_scores=True), out


def test_metrics_match_sklearn(tiny_report):
    report, _ = tiny_report
    res, raw = report["results"][CARTPOLE], report["scores"][CARTPOLE]
    checked = 0
    for group in GROUPS:
        if "error" in res[group]:
            continue
        p, y = raw[group]["probs"], raw[group]["labels"]
        r = res[group]
        assert r["average_precision"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
        assert r["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        tn, fp, fn, tp = confusion_matrix(y, p > r["threshold"]).ravel()
        assert (r["tp"], r["fp"], r["tn"], r["fn"]) == (tp, fp, tn, fn)
        # best-F1 beta: no observed score used as a threshold gives a higher F1
        best = max(f1_score(y, p > t) for t in np.unique(np.r_[p, -1.0]))
        assert f1_score(y, p > r["best_f1_threshold"]) == pytest.approx(best)
        assert r["num_negatives"] == 2 and r["positives"] == int(y.sum()) and r["count"] == y.size
        checked += 1
    assert checked >= 2  # training goal and its paraphrase at least


def test_outputs_written(tiny_report):
    report, out = tiny_report
    data = json.loads((out / "evaluation.json").read_text())
    assert data["results"].keys() == report["results"].keys() and "scores" not in data
    md = (out / "evaluation.md").read_text()
    assert all(f"| CartPoleUpright | {g}" in md for g in GROUPS)
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw, res = report["scores"][CARTPOLE], report["results"][CARTPOLE]
    for g in ("train", "heldout"):  # one score per (frame, goal) of the group, probabilities
        assert raw[g]["probs"].size == res[g]["frames"] * res[g]["goals"]
        assert ((raw[g]["probs"] >= 0) & (raw[g]["probs"] <= 1)).all()
    assert res["heldout"]["goals"] == 4 and res["train"]["goals"] == 1


def test_fixed_threshold_confusion(tiny_clip_dir, tiny_report, tmp_path):
    _, out = tiny_report
    r = evaluate(str(tiny_clip_dir), CARTPOLE, num_negatives=2, scale=0.1, threshold=0.4, data_dir=out / "data",
                 progress=False, return_scores=True)
    p, y = r["scores"][CARTPOLE]["train"]["probs"], r["scores"][CARTPOLE]["train"]["labels"]
    m = r["results"][CARTPOLE]["train"]
    assert m["threshold"] == 0.4 and m["tp"] == int(((p > 0.4) & (y == 1)).sum())


def test_bad_input(tiny_clip_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown environment"):
        evaluate(str(tiny_clip_dir), "vlmreward/Nope-v0", progress=False)
    with pytest.raises(ValueError, match="num_negatives"):
        evaluate(str(tiny_clip_dir), CARTPOLE, num_negatives=0, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        evaluate(str(tiny_clip_dir), CARTPOLE, threshold=1.5, progress=False)
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "open_clip_config.json").write_text((tiny_clip_dir / "open_clip_config.json").read_text())
    (bad / "open_clip_model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="corrupt|could not be read"):
        evaluate(str(bad), CARTPOLE, progress=False)


@pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "open_clip_model.safetensors").is_file(), reason="no default model")
def test_default_model_offline_and_stable(monkeypatch):
    """load_model("default") works offline; its rewards on fixed frames match those recorded at export."""
    import vlmreward
    from vlmreward.pretrain.reference import REFERENCE_FILE, reference_rewards
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vlm = vlmreward.load_model("default")
    assert vlm.preprocess_kwargs["resize_mode"] == "squash"
    ref = json.loads((DEFAULT_MODEL_DIR / REFERENCE_FILE).read_text())
    got = reference_rewards(vlm)
    assert got["goals"] == ref["goals"] and got["frames"] == ref["frames"]
    np.testing.assert_allclose(got["probs"], ref["probs"], atol=2e-3)
    np.testing.assert_array_equal(reference_rewards(vlm)["probs"], got["probs"])  # deterministic
