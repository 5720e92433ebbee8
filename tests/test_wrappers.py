"""VLMRewardWrapper / VectorVLMRewardWrapper against the RewardModel run on the same frames, with a real
(tiny, random-weight) open_clip model and the real environments."""
import gymnasium as gym
import numpy as np
import pytest
import torch

import vlmreward  # noqa: F401
from vlmreward.goals import GoalBank
from vlmreward.reward import RewardModel
from vlmreward.wrappers import VectorVLMRewardWrapper, VLMRewardWrapper
from conftest import RecordingRewardModel

FIND = "vlmreward/Find-v0"
CARTPOLE = "vlmreward/CartPoleUpright-v0"
SMALL = {"frame_size": 70}  # 10-pixel tiles: keeps rendering and preprocessing cheap on a shared CPU


@pytest.fixture(scope="module")
def find_bank(tiny_model):
    return GoalBank(tiny_model, gym.make(FIND, **SMALL).unwrapped.task_set, num_negatives=5)


@pytest.fixture(scope="module")
def cartpole_bank(tiny_model):
    return GoalBank(tiny_model, gym.make(CARTPOLE).unwrapped.task_set)



class CountingRender(gym.Wrapper):
    def __init__(self, env):
        super().__init__(env)
        self.renders = 0

    def render(self):
        self.renders += 1
        return self.env.render()


def test_single_env_reward_equals_reward_model(tiny_model, find_bank):
    rm = RecordingRewardModel(RewardModel(tiny_model, find_bank, threshold=1.0))
    env = VLMRewardWrapper(gym.make(FIND, **SMALL), rm, goal_embedding=True)
    obs, info = env.reset(seed=0)
    assert obs["goal_id"] == find_bank.index(info["goal"]) == find_bank.index(env.unwrapped.goal)
    np.testing.assert_allclose(obs["goal_embedding"], find_bank.goal_embeddings[obs["goal_id"]].numpy())
    assert env.observation_space.contains(obs)
    for t in range(10):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        ref = rm.inner(obs["observation"][None], torch.tensor([obs["goal_id"]]))
        assert reward == pytest.approx(float(ref.rewards[0])) and info["vlm_reward"] == reward
        assert info["vlm_prob"] == pytest.approx(float(ref.probs[0]), abs=1e-6)
        assert info["gt_success"] == env.unwrapped.goal_success(info["goal"])
        assert "env_reward" in info and not terminated  # threshold 1: never a VLM success
        if truncated:
            break
    assert len(rm.calls) == t + 1 and all(f.shape == (1, 70, 70, 3) for f, _ in rm.calls)


def test_single_env_terminates_on_vlm_success(tiny_model, find_bank):
    always = RewardModel(tiny_model, find_bank, threshold=0.0)  # every p > 0: success at once
    env = VLMRewardWrapper(gym.make(FIND, **SMALL), always)
    env.reset(seed=1)
    _, reward, terminated, _, info = env.step(0)
    assert terminated and reward == 1.0 and info["env_reward"] == 0.0
    env = VLMRewardWrapper(gym.make(FIND, **SMALL), always, terminate_on_success=False, keep_env_reward=False)
    env.reset(seed=1)
    _, reward, terminated, _, info = env.step(0)
    assert not terminated and reward == 1.0 and "env_reward" not in info


def test_single_env_renders_once_per_step_and_uses_goal_argument(tiny_model, cartpole_bank):
    rm = RewardModel(tiny_model, cartpole_bank, threshold=1.0)
    inner = CountingRender(gym.make(CARTPOLE, render_mode="rgb_array"))
    goal = "the cart is on the left side of the track"
    env = VLMRewardWrapper(inner, rm, goal=goal)
    obs, info = env.reset(seed=0)
    assert env.unwrapped.goal == goal == info["goal"] and obs["goal_id"] == cartpole_bank.index(goal)
    for _ in range(5):
        obs, reward, _, _, info = env.step(1)
        frame = env.unwrapped.render()  # deterministic re-render, outside the counted wrapper
        assert reward == pytest.approx(float(rm(frame[None], [obs["goal_id"]]).rewards[0]))
    assert inner.renders == 5
    sampled = VLMRewardWrapper(gym.make(CARTPOLE, render_mode="rgb_array"), rm,
                               goal=lambda rng: cartpole_bank.goals[int(rng.integers(1, 3))])
    goals = {sampled.reset(seed=s)[1]["goal"] for s in range(12)}
    assert goals == set(cartpole_bank.goals[1:3])


def test_bad_input(tiny_model, find_bank, cartpole_bank):
    rm = RewardModel(tiny_model, find_bank)
    with pytest.raises(ValueError, match="render_mode"):
        VLMRewardWrapper(gym.make(CARTPOLE), RewardModel(tiny_model, cartpole_bank))
    with pytest.raises(ValueError, match="goal bank"):
        VLMRewardWrapper(gym.make(FIND, **SMALL), rm, goal="go to the moon")
    with pytest.raises(ValueError, match="task set"):
        VLMRewardWrapper(gym.make(FIND, grid_size=6), RewardModel(tiny_model, GoalBank(
            tiny_model, ["pick up the red ball"])), goal="pick up the red ball")
    with pytest.raises(TypeError):
        VLMRewardWrapper(gym.make(FIND, **SMALL), rm, goal=3)
    with pytest.raises(ValueError, match="goal=None"):
        VLMRewardWrapper(gym.make("CartPole-v1", render_mode="rgb_array"), rm)

    class TwoChannelFrames(gym.Wrapper):  # an env that renders frames of the wrong shape
        def render(self):
            return self.env.render()[..., :2]

    env = VLMRewardWrapper(TwoChannelFrames(gym.make(CARTPOLE, render_mode="rgb_array")),
                           RewardModel(tiny_model, cartpole_bank))
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        env.step(0)
    with pytest.raises(ValueError, match="NEXT_STEP"):
        VectorVLMRewardWrapper(gym.make_vec(FIND, 2, vector_kwargs={
            "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}), rm)


ROLLOUT = dict(num_envs=3, steps=20, seed=3)


def _actions():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 3, ROLLOUT["num_envs"]) for _ in range(ROLLOUT["steps"])]


def _rollout(env):
    obs, _ = env.reset(seed=ROLLOUT["seed"])
    out = {k: [] for k in ("obs", "goal_id", "reward", "terminated", "truncated", "vlm_prob")}
    for a in _actions():
        obs, reward, terminated, truncated, info = env.step(a)
        for k, v in zip(out, (obs["observation"], obs["goal_id"], reward, terminated, truncated, info["vlm_prob"])):
            out[k].append(np.array(v))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def mixed_threshold(tiny_model, find_bank):
    """A threshold under which some, not all, frames of the test rollout count as successes: taken from the
    same rollout without terminations, mid-gap (robust to float noise); the rollouts with terminations follow
    it up to their first success, so they do terminate."""
    never = RewardModel(tiny_model, find_bank, threshold=1.0)
    p = np.sort(_rollout(VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=ROLLOUT["num_envs"], **SMALL),
                                                never))["vlm_prob"].ravel())
    k = int(0.7 * len(p))
    k = k - 3 + int(np.argmax(np.diff(p)[k - 3:k + 3]))
    return float((p[k] + p[k + 1]) / 2)


def test_vector_one_call_per_step_and_autoreset_masking(tiny_model, find_bank, mixed_threshold):
    rm = RecordingRewardModel(RewardModel(tiny_model, find_bank, threshold=mixed_threshold))
    n = ROLLOUT["num_envs"]
    env = VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=n, **SMALL), rm)
    obs, _ = env.reset(seed=ROLLOUT["seed"])
    done_before = np.zeros(n, bool)
    ended = calls = 0
    for a in _actions():
        obs, reward, terminated, truncated, info = env.step(a)
        calls += not done_before.all()
        assert len(rm.calls) == calls  # one batched call per step (none when every sub-env resets)
        frames, ids = rm.calls[-1]
        active = ~done_before
        assert np.array_equal(frames, obs["observation"][active]) and np.array_equal(ids, obs["goal_id"][active])
        ref = rm.inner(obs["observation"][active], obs["goal_id"][active])
        np.testing.assert_allclose(reward[active], ref.rewards.numpy())
        np.testing.assert_allclose(info["vlm_prob"][active], ref.probs.numpy(), atol=1e-6)
        assert np.all(reward[done_before] == 0) and not np.any(terminated[done_before] | truncated[done_before])
        vlm_success = np.zeros(n, bool)
        vlm_success[active] = ref.probs.numpy() > mixed_threshold
        # the base env ends an episode on ground-truth success, the wrapper also on VLM success
        np.testing.assert_array_equal(terminated, active & (vlm_success | info["gt_success"]))
        ended += vlm_success.sum()
        done_before = terminated | truncated
    assert 0 < ended < n * ROLLOUT["steps"]


def test_vector_vlm_termination_equals_self_terminating_envs(tiny_model, find_bank, mixed_threshold):
    """A sub-env ended by the VLM looks exactly like a sub-env that terminated by itself (NEXT_STEP)."""
    rm = RewardModel(tiny_model, find_bank, threshold=mixed_threshold)
    ours = _rollout(VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=ROLLOUT["num_envs"], **SMALL), rm))
    selfterm = gym.make_vec(FIND, num_envs=ROLLOUT["num_envs"], **SMALL, wrappers=[lambda e: VLMRewardWrapper(e, rm)])
    ref = _rollout(selfterm)
    assert ref["terminated"].sum() > 0
    for k in ours:
        if k == "vlm_prob":  # batch B vs batch 1 through the image tower: BLAS may round differently per shape
            np.testing.assert_allclose(ours[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
        else:  # mixed_threshold sits mid-gap, so rewards and episode ends are exact
            np.testing.assert_array_equal(ours[k], ref[k], err_msg=k)


def test_vector_sync_and_async_agree(tiny_model, find_bank, mixed_threshold):
    rm = RewardModel(tiny_model, find_bank, threshold=mixed_threshold)
    sync = _rollout(VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=3, vectorization_mode="sync", **SMALL), rm))
    envs = gym.make_vec(FIND, num_envs=3, vectorization_mode="async", **SMALL)
    try:
        asyn = _rollout(VectorVLMRewardWrapper(envs, rm))
    finally:
        envs.close()
    assert sync["terminated"].sum() > 0
    for k in sync:
        np.testing.assert_array_equal(sync[k], asyn[k], err_msg=k)


def test_vector_rendered_frames_and_goal(tiny_model, cartpole_bank):
    rm = RecordingRewardModel(RewardModel(tiny_model, cartpole_bank, threshold=1.0))
    goal = "the pole is upright"
    env = VectorVLMRewardWrapper(gym.make_vec(CARTPOLE, num_envs=3, render_mode="rgb_array"), rm, goal=goal,
                                 goal_embedding=True)
    obs, info = env.reset(seed=0)
    assert np.all(obs["goal_id"] == cartpole_bank.index(goal)) and obs["goal_embedding"].shape == (3, 32)
    for _ in range(4):
        obs, reward, *_ = env.step(np.ones(3, np.int64))
        frames = np.stack(env.env.render())  # deterministic re-render of the same states
        assert np.array_equal(rm.calls[-1][0], frames) and frames.shape == (3, 400, 600, 3)
        np.testing.assert_allclose(reward, rm.inner(frames, obs["goal_id"]).rewards.numpy())
    with pytest.raises(ValueError, match="render_mode"):
        VectorVLMRewardWrapper(gym.make_vec(CARTPOLE, num_envs=2), rm)


def test_vector_goal_sampler_reaches_sub_envs(tiny_model, cartpole_bank):
    """A goal callable decides each sub-env's goal, also across autoresets (through the envs' goal_pool)."""
    rm = RewardModel(tiny_model, cartpole_bank, threshold=1.0)
    choices = cartpole_bank.goals[1:3]
    env = VectorVLMRewardWrapper(gym.make_vec(CARTPOLE, num_envs=3, render_mode="rgb_array"), rm,
                                 goal=lambda rng: choices[int(rng.integers(2))])
    obs, info = env.reset(seed=0)
    seen = set()
    for t in range(40):
        base_goals = env.env.get_attr("goal")
        assert list(info["goal"]) == list(base_goals) and set(base_goals) <= set(choices)
        assert [cartpole_bank.goals[i] for i in obs["goal_id"]] == list(base_goals)
        seen.update(base_goals)
        obs, _, terminated, truncated, info = env.step(np.zeros(3, np.int64))  # push left: episodes end fast
    assert seen == set(choices)


def test_vector_score_all_goals_matches_per_goal_rewards(tiny_model, find_bank, mixed_threshold):
    """score_all_goals: same rewards and episode ends as the per-goal call; every goal's reward in info."""
    rm = RewardModel(tiny_model, find_bank, threshold=mixed_threshold)
    ours = VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=ROLLOUT["num_envs"], **SMALL), rm, score_all_goals=True)
    ref = _rollout(VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=ROLLOUT["num_envs"], **SMALL), rm))
    obs, _ = ours.reset(seed=ROLLOUT["seed"])
    done_before = np.zeros(ROLLOUT["num_envs"], bool)
    for t, a in enumerate(_actions()):
        obs, reward, terminated, truncated, info = ours.step(a)
        np.testing.assert_array_equal(reward, ref["reward"][t])
        np.testing.assert_array_equal(terminated, ref["terminated"][t])
        all_r = info["vlm_rewards_all"]
        assert all_r.shape == (ROLLOUT["num_envs"], len(find_bank))
        np.testing.assert_array_equal(all_r[np.arange(len(reward)), obs["goal_id"]], reward)
        assert not all_r[done_before].any()  # reset steps: no reward for any goal
        active = ~done_before
        np.testing.assert_array_equal(all_r[active], rm(obs["observation"][active]).rewards.numpy())
        probs = rm(obs["observation"][active]).probs.numpy()
        np.testing.assert_array_equal(info["vlm_success_all"][active], probs > rm.threshold)
        np.testing.assert_allclose(info["vlm_probs_all"][active], probs, atol=1e-7)
        assert not info["vlm_success_all"][done_before].any() and not info["vlm_probs_all"][done_before].any()
        done_before = terminated | truncated


@pytest.mark.parametrize("vector", [False, True])
def test_default_episode_end_follows_the_declared_reward_style(tiny_model, cartpole_bank, find_bank, vector):
    """terminate_on_success=None: a per-step environment (CartPoleUpright) is never ended by the VLM, even when
    the reward fires at every step while the pole is up; a goal-reaching one (Find) ends at the first reward."""
    always = RewardModel(tiny_model, cartpole_bank, threshold=0.0)  # p > 0: the reward fires on every frame
    if vector:
        env = VectorVLMRewardWrapper(gym.make_vec(CARTPOLE, num_envs=1, render_mode="rgb_array"), always,
                                     goal="the pole is upright")
    else:
        env = VLMRewardWrapper(gym.make(CARTPOLE, render_mode="rgb_array"), always, goal="the pole is upright")
    assert env.terminate_on_success is False
    env.reset(seed=0)
    steps, rewards = 0, []
    while True:  # alternate pushes keep the pole up for a while; only gymnasium's own failure ends it
        obs, reward, terminated, truncated, info = env.step(np.array([steps % 2]) if vector else steps % 2)
        steps, done = steps + 1, bool(np.any(terminated) or np.any(truncated))
        rewards.append(float(np.asarray(reward).ravel()[0]))
        pole_up = bool(np.asarray(info["gt_success"]).ravel()[0])
        if done:
            break
        assert steps < 500
    assert steps > 5 and all(r == 1.0 for r in rewards)
    base = env.unwrapped if not vector else None
    if base is not None:
        assert base.state is not None and not pole_up  # it ended because the pole fell, not on the reward
    find = RewardModel(tiny_model, find_bank, threshold=0.0)
    wrapped = (VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=1, **SMALL), find) if vector
               else VLMRewardWrapper(gym.make(FIND, **SMALL), find))
    assert wrapped.terminate_on_success is True
    wrapped.reset(seed=0)
    _, _, terminated, _, _ = wrapped.step(np.array([0]) if vector else 0)
    assert bool(np.asarray(terminated).ravel()[0])


def test_plain_gymnasium_env_is_goal_reaching(tiny_model, cartpole_bank):
    rm = RewardModel(tiny_model, cartpole_bank, threshold=0.0)
    env = VLMRewardWrapper(gym.make("CartPole-v1", render_mode="rgb_array"), rm, goal="the pole is upright")
    assert env.terminate_on_success is True  # declares nothing: the paper's goal-reaching default


def test_episode_statistics_sum_rewards_and_ground_truth(tiny_model, find_bank):
    """EpisodeStatistics against sums kept by hand over the same NEXT_STEP rollout (reset steps excluded)."""
    from vlmreward.wrappers import EpisodeStatistics
    rm = RewardModel(tiny_model, find_bank, threshold=0.3)
    env = EpisodeStatistics(VectorVLMRewardWrapper(gym.make_vec(FIND, num_envs=3, max_episode_steps=6, **SMALL),
                                                   rm, keep_env_reward=True))
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    sums, prev_done, episodes = np.zeros((3, 4)), np.zeros(3, bool), 0
    for _ in range(40):
        _, reward, term, trunc, info = env.step(rng.integers(0, 3, 3))
        live = ~prev_done
        step = np.stack([reward, np.ones(3), info["vlm_reward"], info["env_reward"]], 1)
        sums[live] += step[live]
        done = term | trunc
        ended = done & live
        np.testing.assert_array_equal(info.get("_episode", np.zeros(3, bool)), ended)
        for i in np.flatnonzero(ended):
            ep = info["episode"]
            assert (ep["r"][i], ep["l"][i], ep["vlm_r"][i], ep["gt_r"][i]) == tuple(sums[i])
            episodes += 1
        sums[done] = 0.0
        prev_done = done
    assert episodes >= 10
