"""RewardModel against an independent implementation: open_clip's PIL transform + encode_image + encode_text +
the paper's equations in float64 (Baumli et al. eq. 1-2; VLM-RM's projection, arXiv 2310.12921)."""
import gymnasium as gym
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import TINY_PREPROCESS_CFG, build_tiny_clip, save_hub_layout
from vlmreward.goals import GoalBank
from vlmreward.models import load_model
from vlmreward.reward import RewardModel

GOALS = ["a pole standing upright", "a pole fallen to the left", "a cart at the edge", "a red ball"]
TASK_SET = GOALS + ["a blue key", "an open door", "an empty room"]
TEMPLATES = ("a photo of {}.", "{}")
# Preprocessing may differ from PIL by up to 2/255 per pixel (the core issue's tolerance). Through this model
# (logit_scale 100) the measured probability difference is ~2e-5; 0.005 leaves room for kernel changes.
PROB_TOL = 0.005


@pytest.fixture(scope="module")
def frames():
    """Real frames: CartPole (400x600) after a few steps, and random images of other sizes resized to it."""
    env = gym.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=0)
    out = []
    for t in range(6):
        env.step(t % 2)
        out.append(env.render())
    env.close()
    rng = np.random.default_rng(0)
    out += [np.asarray(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).resize((600, 400)))
            for h, w in [(40, 60), (300, 200)]]
    return np.stack(out)


@pytest.fixture(scope="module", params=["shortest", "squash"])
def model(request, tmp_path_factory):
    pp = dict(TINY_PREPROCESS_CFG, resize_mode=request.param)
    return load_model(str(save_hub_layout(build_tiny_clip(seed=1), tmp_path_factory.mktemp("m"), preprocess_cfg=pp)))


def reference(model, frames, strings, goal_sets, logit_scale):
    """probs (B, G) and cosines (B, K) from open_clip alone, float64."""
    module, cfg = model.model, model.open_clip_preprocess_cfg
    transform = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"],
                                          resize_mode=cfg["resize_mode"], interpolation=cfg["interpolation"])
    pixels = torch.stack([transform(Image.fromarray(f)) for f in frames])
    with torch.no_grad():
        x = F.normalize(module.encode_image(pixels).double(), dim=-1)
        t = []
        for s in strings:
            e = F.normalize(module.encode_text(open_clip.tokenize([p.replace("{}", s) for p in TEMPLATES],
                                                                  context_length=32)).double(), dim=-1)
            t.append(F.normalize(e.mean(0), dim=0))
    cos = x @ torch.stack(t).T
    probs = torch.empty(len(frames), len(goal_sets), dtype=torch.float64)
    for g, row in enumerate(goal_sets.tolist()):
        row = [k for k in row if k >= 0]
        probs[:, g] = torch.softmax(logit_scale * cos[:, row], dim=1)[:, 0]
    return probs, cos


def test_binary_and_probability_match_reference(model, frames):
    bank = GoalBank(model, GOALS, templates=TEMPLATES, negatives=TASK_SET, num_negatives=4, seed=0)
    probs_ref, cos_ref = reference(model, frames, bank.strings, bank.goal_sets, model.logit_scale)
    assert probs_ref.std() > 0.05  # the reference is not degenerate
    out = RewardModel(model, bank)(frames)
    assert out.probs.shape == out.rewards.shape == (len(frames), len(GOALS))
    assert out.probs.dtype == torch.float32
    torch.testing.assert_close(out.probs.double(), probs_ref, atol=PROB_TOL, rtol=0)
    decided = 0
    for beta in (0.05, 0.2, 0.35, 0.5, 0.65, 0.8):
        rewards = RewardModel(model, bank, threshold=beta)(frames).rewards
        away = (probs_ref - beta).abs() > PROB_TOL
        assert torch.equal(rewards[away], (probs_ref[away] > beta).float())
        decided += int(away.sum())
    assert decided > 0.8 * 6 * probs_ref.numel()  # most comparisons are decided away from beta
    prob = RewardModel(model, bank, mode="probability")(frames)
    torch.testing.assert_close(prob.rewards, prob.probs)
    cos = RewardModel(model, bank, mode="cosine")(frames)
    torch.testing.assert_close(cos.rewards.double(), cos_ref[:, :len(GOALS)], atol=0.01, rtol=0)


@pytest.mark.parametrize("goals", [len(TASK_SET), 2])
def test_a_bank_over_the_whole_task_set_scores_every_goal_as_the_per_set_kernel(model, frames, goals):
    """Every goal's set = every string of the bank (the trainer's default bank; with 2 goals, the rest of the
    task set are negatives only, as --negatives-from): one softmax per frame over the strings gives what the
    kernel's per-set path and the float64 reference give, in every mode and with goal_ids."""
    from vlmreward.ops import fused_reward
    bank = GoalBank(model, TASK_SET[:goals], templates=TEMPLATES, negatives=TASK_SET)
    assert bank.goal_sets.shape == (goals, len(TASK_SET)) and RewardModel(model, bank)._own is not None
    probs_ref, cos_ref = reference(model, frames, bank.strings, bank.goal_sets, model.logit_scale)
    ids = torch.arange(len(frames)) % goals
    rows = torch.arange(len(frames))
    for mode in ("binary", "probability", "cosine"):
        rm = RewardModel(model, bank, mode=mode, threshold=0.3)
        out = rm(frames)
        per_set = fused_reward(torch.from_numpy(frames), model.encode_image, bank.text_embeddings, bank.goal_sets,
                               logit_scale=rm.logit_scale, threshold=0.3, mode=mode, **model.preprocess_kwargs)
        torch.testing.assert_close(out.probs, per_set.probs, atol=1e-6, rtol=1e-5)
        close = (per_set.probs - 0.3).abs() < 1e-5  # a p within rounding of beta may fall either side
        torch.testing.assert_close(out.rewards[~close], per_set.rewards[~close], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.probs.double(), probs_ref, atol=PROB_TOL, rtol=0)
        one = rm(frames, ids)
        torch.testing.assert_close(one.probs, out.probs[rows, ids], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.rewards.double(), cos_ref[:, :goals], atol=0.01, rtol=0)  # cosine mode
    # projection does not depend on the negatives: the same goals without extra negatives give the same rewards
    alone = GoalBank(model, TASK_SET[:goals], templates=TEMPLATES)
    kw = dict(mode="projection", baseline=["a photo"], alpha=0.5)
    torch.testing.assert_close(RewardModel(model, bank, **kw)(frames).rewards,
                               RewardModel(model, alone, **kw)(frames).rewards, atol=1e-5, rtol=0)


def test_temperature(model, frames):
    bank = GoalBank(model, GOALS, templates=TEMPLATES)
    probs_ref, _ = reference(model, frames, bank.strings, bank.goal_sets, 1 / 0.5)
    rm = RewardModel(model, bank, temperature=0.5, mode="probability")
    assert rm.logit_scale == 2.0
    torch.testing.assert_close(rm(frames).probs.double(), probs_ref, atol=PROB_TOL / 10, rtol=0)
    assert RewardModel(model, bank).temperature == pytest.approx(1 / model.logit_scale)


def test_goal_ids_select_from_the_full_batch(tiny_model, frames):
    bank = GoalBank(tiny_model, GOALS, negatives=TASK_SET, num_negatives=2)
    for mode, kw in [("binary", {}), ("probability", {}), ("cosine", {}), ("projection", {"baseline": "a cart"})]:
        rm = RewardModel(tiny_model, bank, threshold=0.3, mode=mode, **kw)
        full = rm(frames)
        ids = torch.arange(len(frames)) % len(GOALS)
        some = rm(frames, ids)
        assert some.probs.shape == (len(frames),)
        rows = torch.arange(len(frames))
        torch.testing.assert_close(some.probs, full.probs[rows, ids])
        torch.testing.assert_close(some.rewards, full.rewards[rows, ids])
    assert torch.equal(rm(frames, rm.goal_ids([GOALS[2]] * len(frames))).rewards, full.rewards[:, 2])
    assert rm(frames[0], 1).probs.shape == (1,)  # one (H, W, 3) frame, an int goal
    assert rm(list(frames[:2]), [0, 1]).probs.shape == (2,)  # a tuple/list of frames as envs.render() gives


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_projection_matches_vlmrm_formula(tiny_model, frames, alpha):
    bank = GoalBank(tiny_model, GOALS, templates=TEMPLATES)
    baseline = ["a cart on a track", "a picture"]
    out = RewardModel(tiny_model, bank, mode="projection", baseline=baseline, alpha=alpha)(frames)
    # VLM-RM eq. 3, literally: R = 1 - 1/2 |(x - t) P|^2, P = alpha d d^T/|d|^2 + (1 - alpha) I, d = t - b
    _, cos = reference(tiny_model, frames, bank.strings, bank.goal_sets, tiny_model.logit_scale)
    module, cfg = tiny_model.model, tiny_model.open_clip_preprocess_cfg
    transform = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"])
    with torch.no_grad():
        x = F.normalize(module.encode_image(torch.stack([transform(Image.fromarray(f)) for f in frames])).double(), dim=-1)
        b = F.normalize(F.normalize(module.encode_text(open_clip.tokenize(baseline, context_length=32)).double(),
                                    dim=-1).mean(0), dim=0)
    expected = torch.empty(len(frames), len(GOALS), dtype=torch.float64)
    for g in range(len(GOALS)):
        t = bank.text_embeddings[g].double()
        d = t - b
        P = alpha * torch.outer(d, d) / d.dot(d) + (1 - alpha) * torch.eye(len(d), dtype=torch.float64)
        expected[:, g] = 1 - 0.5 * (((x - t) @ P) ** 2).sum(-1)
    torch.testing.assert_close(out.rewards.double(), expected, atol=0.01, rtol=0)
    if alpha == 0.0:  # plain cosine, affinely: 1 - (1 - cos) = cos
        torch.testing.assert_close(out.rewards.double(), cos[:, :len(GOALS)], atol=0.01, rtol=0)


def test_bad_input(tiny_model, tmp_path, frames):
    bank = GoalBank(tiny_model, GOALS)
    rm = RewardModel(tiny_model, bank)
    with pytest.raises(TypeError, match="int64"):
        rm(frames, torch.zeros(len(frames)))
    with pytest.raises(TypeError, match="int64"):
        rm(frames, np.ones(len(frames), dtype=bool))
    with pytest.raises(ValueError, match=r"shape \(8,\)"):
        rm(frames, torch.zeros(3, dtype=torch.int64))
    with pytest.raises(IndexError, match=r"out of range \[0, 4\): \[4\]"):
        rm(frames, torch.tensor([0, 1, 2, 3, 4, 0, 0, 0]))
    with pytest.raises(IndexError, match="out of range"):
        rm(frames, -1)
    with pytest.raises(TypeError, match="uint8"):
        rm(frames.astype(np.float32))
    other = load_model(str(save_hub_layout(build_tiny_clip(seed=4), tmp_path / "o")))
    with pytest.raises(ValueError, match="built with model"):
        RewardModel(other, bank)
    for kwargs, match in [(dict(threshold=float("nan")), "threshold"), (dict(temperature=0), "temperature"),
                          (dict(mode="sigmoid"), "mode"), (dict(mode="projection"), "baseline"),
                          (dict(mode="projection", baseline="x", alpha=2), "alpha")]:
        with pytest.raises(ValueError, match=match):
            RewardModel(tiny_model, bank, **kwargs)


def test_docs_example_runs(tiny_clip_dir, tmp_path, monkeypatch, capsys):
    """Runs the python block of docs/reward_model.md. Until the default model is shipped, the tiny model
    stands in for it (the one substitution, so the rest of the example still runs as written)."""
    import re
    from pathlib import Path

    from vlmreward.models import DEFAULT_MODEL_DIR
    doc = (Path(__file__).parents[1] / "docs" / "reward_model.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    if not (DEFAULT_MODEL_DIR / "open_clip_config.json").is_file():
        assert 'load_model("default")' in code
        code = code.replace('load_model("default")', f"load_model({str(tiny_clip_dir)!r})")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/reward_model.md", "exec"), {"__name__": "docs_example"})
    printed = capsys.readouterr().out
    assert "p(upright):" in printed and "beta of best F1" in printed
    assert (tmp_path / "cartpole_bank.pt").is_file()


def test_projection_with_vlmrm_mean_ensembling(tiny_model, frames):
    """VLM-RM's target and baseline are means of normalised prompt embeddings, not renormalised; its reward is
    eq. 3 with those vectors as they are."""
    bank = GoalBank(tiny_model, GOALS, templates=TEMPLATES, template_ensembling="mean")
    baseline = ["a cart on a track", "a picture"]
    out = RewardModel(tiny_model, bank, mode="projection", baseline=baseline, alpha=0.5)(frames)
    module, cfg = tiny_model.model, tiny_model.open_clip_preprocess_cfg
    transform = open_clip.image_transform(cfg["size"], is_train=False, mean=cfg["mean"], std=cfg["std"])
    with torch.no_grad():
        pixels = torch.stack([transform(Image.fromarray(f)) for f in frames])
        x = F.normalize(module.encode_image(pixels).double(), dim=-1)
        b = F.normalize(module.encode_text(open_clip.tokenize(baseline, context_length=32)).double(), dim=-1).mean(0)
    assert b.norm() < 0.999
    for g, goal in enumerate(GOALS):
        with torch.no_grad():
            t = F.normalize(module.encode_text(open_clip.tokenize([p.format(goal) for p in TEMPLATES],
                                                                  context_length=32)).double(), dim=-1).mean(0)
        d = t - b
        P = 0.5 * torch.outer(d, d) / d.dot(d) + 0.5 * torch.eye(len(d), dtype=torch.float64)
        expected = 1 - 0.5 * (((x - t) @ P) ** 2).sum(-1)
        torch.testing.assert_close(out.rewards[:, g].double(), expected, atol=0.01, rtol=0)


def fire_warnings(caught):
    return [w for w in caught if issubclass(w.category, RuntimeWarning) and "binary reward" in str(w.message)]


@pytest.mark.parametrize("threshold, expected", [(1.0, "did not fire"), (0.0, "fired on every"), (None, None)])
def test_a_reward_that_never_or_always_fires_is_warned_once(tiny_model, frames, threshold, expected):
    import warnings
    bank = GoalBank(tiny_model, GOALS, negatives=TASK_SET, num_negatives=2)
    probs = RewardModel(tiny_model, bank, mode="probability")(frames).probs
    beta = float(probs.median()) if threshold is None else threshold  # None: fires on some frames only
    rm = RewardModel(tiny_model, bank, threshold=beta, fire_check_frames=2 * len(frames))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rm(frames)
        assert not fire_warnings(caught)  # not before the check's frame count
        rm(frames, np.zeros(len(frames), dtype=np.int64))
        rm(frames)
    found = fire_warnings(caught)
    if expected is None:
        assert not found
        return
    assert len(found) == 1 and expected in str(found[0].message)  # once
    extreme = float(probs.max() if threshold == 1.0 else probs.min())
    assert f"{extreme:.3f}" in str(found[0].message) and f"beta = {beta}" in str(found[0].message)
    assert "calibrate" in str(found[0].message)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet = RewardModel(tiny_model, bank, threshold=beta, fire_check_frames=0)
        for _ in range(3):
            quiet(frames)
        RewardModel(tiny_model, bank, threshold=beta, mode="probability", fire_check_frames=1)(frames)
    assert not fire_warnings(caught)
    with pytest.raises(ValueError, match="fire_check_frames"):
        RewardModel(tiny_model, bank, fire_check_frames=-1)


def test_calibrate_sets_the_best_f1_threshold(tiny_model, frames):
    from sklearn.metrics import f1_score, precision_recall_curve, precision_score
    bank = GoalBank(tiny_model, GOALS, negatives=TASK_SET, num_negatives=3)
    rm = RewardModel(tiny_model, bank, threshold=0.99)
    ids = np.arange(len(frames)) % len(GOALS)
    p = RewardModel(tiny_model, bank, mode="probability")(frames, ids).probs.double().numpy()
    labels = p > np.median(p)  # some structure
    labels[[0, 3]] = ~labels[[0, 3]]  # not separable by every threshold
    beta = rm.calibrate(frames, labels, goal_ids=ids)  # one batch, as p: the same float32 scores
    assert rm.threshold == beta
    # scikit-learn: the best F1 over every threshold of the curve
    _, _, thresholds = precision_recall_curve(labels, p)
    best = max(f1_score(labels, p >= t) for t in thresholds)
    assert f1_score(labels, p > beta) == pytest.approx(best)
    assert torch.equal(rm(frames, ids).rewards, torch.from_numpy(p > beta).float())
    # every goal of the bank, labels (B, G); a target precision: the smallest beta reaching it
    every = RewardModel(tiny_model, bank, mode="probability")(frames).probs.double().numpy()
    all_labels = every > np.quantile(every, 0.7)
    all_labels[0] = ~all_labels[0]
    beta_all = rm.calibrate(frames, all_labels, target=0.8)
    y, s = all_labels.ravel(), every.ravel()
    assert precision_score(y, s > beta_all) >= 0.8
    assert all(precision_score(y, s > t) < 0.8 for t in np.unique(s) if t < beta_all)
    with pytest.raises(ValueError, match=r"labels must have shape \(8,\)"):
        rm.calibrate(frames, all_labels, goal_ids=ids)
