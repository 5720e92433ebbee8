"""vlmreward evaluate: metrics against scikit-learn, outputs, errors, the shipped default model."""
import json

import numpy as np
import pytest
import torch

import vlmreward
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

from vlmreward.evaluation import GROUPS, evaluate_reward_model as evaluate
from vlmreward.models import DEFAULT_MODEL_DIR

CARTPOLE = "vlmreward/CartPoleUpright-v0"
MOUNTAINCAR = "vlmreward/MountainCarFlag-v0"


@pytest.fixture(scope="module")
def tiny_report(tiny_clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return evaluate(str(tiny_clip_dir), CARTPOLE, num_negatives=2, scale=0.1, out=out,
                    data_dir=out / "data", progress=False, return_scores=True), out


def test_metrics_match_sklearn(tiny_report):
    report, _ = tiny_report
    res, raw = report["results"][CARTPOLE], report["scores"][CARTPOLE]
    checked = 0
    for group in res:
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
    assert checked >= 3  # training goals and their two evaluation-only wordings at least


def test_outputs_written(tiny_report):
    report, out = tiny_report
    data = json.loads((out / "evaluation.json").read_text())
    assert data["results"].keys() == report["results"].keys() and "scores" not in data
    md = (out / "evaluation.md").read_text()
    assert all(f"| CartPoleUpright | {g}" in md for g in GROUPS)
    assert (out / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw, res = report["scores"][CARTPOLE], report["results"][CARTPOLE]
    for g in ("train", "eval:0", "eval:1"):  # one score per (frame, goal) of the group, probabilities
        assert raw[g]["probs"].size == res[g]["frames"] * res[g]["goals"]
        assert ((raw[g]["probs"] >= 0) & (raw[g]["probs"] <= 1)).all()
    # every CartPole goal is a training goal; each evaluation wording rewords all of them
    assert res["train"]["goals"] == res["eval:0"]["goals"] == 5 and res["heldout"]["goals"] == 0
    assert res["eval:0"]["wording"] == "the pole remains perfectly straight" and "`the pole remains" in md


def test_fixed_threshold_confusion(tiny_clip_dir, tiny_report, tmp_path):
    _, out = tiny_report
    r = evaluate(str(tiny_clip_dir), CARTPOLE, num_negatives=2, scale=0.1, threshold=0.4, data_dir=out / "data",
                 progress=False, return_scores=True)
    p, y = r["scores"][CARTPOLE]["train"]["probs"], r["scores"][CARTPOLE]["train"]["labels"]
    m = r["results"][CARTPOLE]["train"]
    assert m["threshold"] == 0.4 and m["tp"] == int(((p > 0.4) & (y == 1)).sum())


def test_default_negatives_are_the_whole_task_set_the_trainer_uses(tiny_clip_dir, tiny_report):
    """By default every goal competes with its whole task set, as in `vlmreward train` (Args.num_negatives None):
    p(goal | frame) = softmax over the task set of logit_scale * cos, computed here from open_clip directly."""
    import gymnasium as gym
    import torch.nn.functional as F
    from vlmreward.models import load_model
    from vlmreward.rl.ppo import Args
    assert Args().num_negatives is None
    _, out = tiny_report
    r = evaluate(str(tiny_clip_dir), CARTPOLE, scale=0.1, data_dir=out / "data", progress=False, return_scores=True)
    task = list(gym.make(CARTPOLE).unwrapped.task_set)
    res, raw = r["results"][CARTPOLE]["train"], r["scores"][CARTPOLE]["train"]
    assert r["num_negatives"] is None and res["num_negatives"] == len(task) - 1 and "whole task set" in r["table"]
    vlm = load_model(str(tiny_clip_dir))
    frames = raw["frames"]
    from vlmreward.evaluation import test_recipe
    from vlmreward.pretrain.dataset import load_or_generate
    ds = load_or_generate(test_recipe(vlm, [CARTPOLE], 0.1), out / "data", progress=False)
    assert len(ds) == frames
    with torch.no_grad():
        x = F.normalize(vlm.encode_image(vlmreward.preprocess(torch.from_numpy(ds.frames), **vlm.preprocess_kwargs)
                                         ).double(), dim=-1)
        t = F.normalize(vlm.encode_text(task).double(), dim=-1)
    p = torch.softmax(vlm.logit_scale * x @ t.T, dim=1).numpy()  # (frames, goals); all CartPole goals train
    np.testing.assert_allclose(raw["probs"], p.ravel(), atol=1e-4)
    # --negatives-from: another environment's task set joins the softmax's denominator
    more = list(gym.make(MOUNTAINCAR).unwrapped.task_set)
    r = evaluate(str(tiny_clip_dir), CARTPOLE, scale=0.1, data_dir=out / "data", progress=False, return_scores=True,
                 negatives_from=[MOUNTAINCAR])
    with torch.no_grad():
        t = F.normalize(vlm.encode_text(task + more).double(), dim=-1)
    p = torch.softmax(vlm.logit_scale * x @ t.T, dim=1)[:, :len(task)].numpy()
    np.testing.assert_allclose(r["scores"][CARTPOLE]["train"]["probs"], p.ravel(), atol=1e-4)
    assert r["results"][CARTPOLE]["train"]["num_negatives"] == len(task) + len(more) - 1
    assert MOUNTAINCAR in r["table"] and r["negatives_from"] == [MOUNTAINCAR]


def test_bad_input(tiny_clip_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown environment"):
        evaluate(str(tiny_clip_dir), "vlmreward/Nope-v0", progress=False)
    with pytest.raises(ValueError, match="num_negatives"):
        evaluate(str(tiny_clip_dir), CARTPOLE, num_negatives=0, progress=False)
    with pytest.raises(ValueError, match="threshold"):
        evaluate(str(tiny_clip_dir), CARTPOLE, threshold=1.5, progress=False)
    with pytest.raises(ValueError, match="no language goals"):
        evaluate(str(tiny_clip_dir), CARTPOLE, negatives_from=["CartPole-v1"], data_dir=tmp_path, progress=False)
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
    # the relation head of two-object goals (vlmreward.relation), recorded the same way
    assert vlm.relation_head is not None and got["relation_goals"] == ref["relation_goals"]
    np.testing.assert_allclose(got["relation_probs"], ref["relation_probs"], atol=2e-3)


def test_pr_curves_in_the_report_keep_every_recall_level(tiny_report):
    from sklearn.metrics import precision_recall_curve
    report, _ = tiny_report
    for group, r in report["results"][CARTPOLE].items():
        if "pr_curve" in r:
            raw = report["scores"][CARTPOLE][group]
            _, full_recall, _ = precision_recall_curve(raw["labels"], raw["probs"])
            recall = np.array(r["pr_curve"]["recall"])
            assert recall[0] == 1.0 and recall[-1] == 0.0 and set(recall) == set(full_recall), group


def test_validation_ap_equals_evaluate_ap(tmp_path, tiny_arch):
    """vlmreward pretrain's validation and vlmreward evaluate score the same frames and model identically."""
    from vlmreward.evaluation import test_recipe
    from vlmreward.models import build_model, load_model, model_config, save_hub_dir
    from vlmreward.pretrain.dataset import load_or_generate
    from vlmreward.pretrain.train import validate
    module = build_model(tiny_arch)
    with torch.no_grad():
        module.logit_scale.fill_(np.log(30.0))  # probabilities that spread
    exported = save_hub_dir(tmp_path / "m", module, model_config(tiny_arch))
    envs = [CARTPOLE, "vlmreward/MountainCarFlag-v0"]
    report = evaluate(str(exported), envs, num_negatives=2, scale=0.05, data_dir=tmp_path / "data", progress=False)
    ds = load_or_generate(test_recipe(load_model(str(exported)), envs, 0.05), tmp_path / "data", progress=False)
    val = validate(module, tiny_arch, ds, num_negatives=2, seed=0)
    assert module.training  # handed back in train mode
    compared = 0
    for env_id in envs:
        fam = env_id.split("/")[-1].removesuffix("-v0")
        for group in ("train", "heldout", "eval:0", "eval:1"):  # validation scores two evaluation wordings
            r = report["results"][env_id][group]
            if "error" in r:
                assert np.isnan(val[fam][f"ap_{group}"])
                continue
            assert val[fam][f"ap_{group}"] == r["average_precision"], (env_id, group)
            compared += 1
    assert compared >= 6


def write_labelled_frames(path, n=12, **override):
    """CartPole frames labelled with goal_success of each goal (a user's own data)."""
    import gymnasium as gym
    import vlmreward  # noqa: F401
    env = gym.make(CARTPOLE, render_mode="rgb_array")
    env.reset(seed=3)
    goals = list(env.unwrapped.task_set)
    frames, labels = [], []
    for t in range(n):
        _, _, terminated, truncated, _ = env.step(t % 2)
        frames.append(env.render())
        labels.append([env.unwrapped.goal_success(g) for g in goals])
        if terminated or truncated:
            env.reset()
    env.close()
    arrays = {"frames": np.stack(frames), "goals": np.array(goals), "labels": np.array(labels)}
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return arrays


def test_user_data_npz(tiny_clip_dir, tmp_path):
    arrays = write_labelled_frames(tmp_path / "mine.npz", n=40)
    assert 0 < arrays["labels"].sum() < arrays["labels"].size
    report = evaluate(str(tiny_clip_dir), data=tmp_path / "mine.npz", num_negatives=3, out=tmp_path / "out",
                      progress=False, return_scores=True)
    r, raw = report["results"]["mine"]["goals"], report["scores"]["mine"]["goals"]
    assert raw["probs"].shape == (40 * len(arrays["goals"]),)
    np.testing.assert_array_equal(raw["labels"], arrays["labels"].ravel())
    assert r["average_precision"] == pytest.approx(average_precision_score(raw["labels"], raw["probs"]), abs=1e-12)
    assert r["frames"] == 40 and r["num_negatives"] == 3 and r["goals"] == len(arrays["goals"])
    assert "| mine | goals" in (tmp_path / "out" / "evaluation.md").read_text()
    # the scores are the reward model's, frame by frame
    from vlmreward.goals import GoalBank
    from vlmreward.models import load_model
    from vlmreward.reward import RewardModel
    vlm = load_model(str(tiny_clip_dir))
    bank = GoalBank(vlm, list(arrays["goals"]), num_negatives=3, seed=0)
    np.testing.assert_allclose(RewardModel(vlm, bank, mode="probability")(arrays["frames"]).probs.numpy().ravel(),
                               raw["probs"], rtol=0, atol=1e-6)
    from vlmreward.cli import main
    assert main(["evaluate", "--model", str(tiny_clip_dir), "--data", str(tmp_path / "mine.npz"), "--out",
                 str(tmp_path / "cli"), "--negatives", "2", "--no-progress"]) == 0
    assert (tmp_path / "cli" / "pr_curves.png").is_file()


@pytest.mark.parametrize("override, error, match", [
    ({"labels": np.zeros((12, 5), dtype=np.int64)}, ValueError, "labels must be bool"),
    ({"labels": np.zeros((12, 4), dtype=bool)}, ValueError, r"labels must be bool \(N, G\) = \(12, 5\)"),
    ({"frames": np.zeros((12, 8, 8, 3), dtype=np.float32)}, ValueError, "frames must be uint8"),
    ({"frames": np.zeros((12, 8, 8), dtype=np.uint8)}, ValueError, "frames must be uint8"),
    ({"goals": np.arange(5)}, ValueError, "goals must be a non-empty 1-D array of strings"),
    ({"labels": None}, ValueError, r"missing \['labels'\]"),
    ({"label": np.zeros(3)}, ValueError, r"unknown \['label'\]"),
    ({"goals": np.array(["a", {"b": 1}], dtype=object)}, ValueError, "Python objects"),
])
def test_user_data_errors(tiny_clip_dir, tmp_path, override, error, match):
    write_labelled_frames(tmp_path / "bad.npz", **override)
    with pytest.raises(error, match=match):
        evaluate(str(tiny_clip_dir), data=tmp_path / "bad.npz", progress=False)


def test_user_data_file_errors(tiny_clip_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate(str(tiny_clip_dir), data=tmp_path / "missing.npz", progress=False)
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        evaluate(str(tiny_clip_dir), data=tmp_path / "corrupt.npz", progress=False)
    with pytest.raises(ValueError, match="not both"):
        evaluate(str(tiny_clip_dir), CARTPOLE, data=tmp_path / "corrupt.npz", progress=False)


def test_public_names_do_not_collide():
    import types

    import vlmreward
    import vlmreward.evaluation  # what the CLI imports
    assert isinstance(vlmreward.evaluation, types.ModuleType)
    assert vlmreward.evaluate_reward_model is vlmreward.evaluation.evaluate_reward_model
    assert callable(vlmreward.evaluate_reward_model)
