"""vlmreward.integrations.sb3 against stable-baselines3's own DummyVecEnv over the same gymnasium envs (same
seeds, same actions), and SB3's PPO through the adapter with a real reward model on real environments."""
import csv
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import configure
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import vlmreward  # noqa: F401
from vlmreward.goals import GoalBank
from vlmreward.integrations.sb3 import GroundTruthCallback, SB3VecEnv
from vlmreward.reward import RewardModel
from vlmreward.wrappers import VectorVLMRewardWrapper, VLMRewardWrapper
from conftest import RecordingRewardModel

FIND = "vlmreward/Find-v0"
CARTPOLE = "vlmreward/CartPoleUpright-v0"
SMALL = {"frame_size": 70, "max_steps": 8}  # 10-pixel tiles; short episodes: truncations within a short test
N = 3
REPO = Path(__file__).resolve().parents[1]



def _actions(steps, high, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, high, N) for _ in range(steps)]


def _assert_obs_equal(a, b, msg=""):
    if isinstance(b, dict):
        assert set(a) == set(b), msg
        for k in b:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{msg} {k}")
    else:
        np.testing.assert_array_equal(a, b, err_msg=msg)


def _compare(ours, ref, actions, info_close=()):
    """Step both VecEnvs with the same actions; everything SB3 reads must agree. Returns the count of
    (terminated, truncated) episode ends seen."""
    ours.seed(11)
    ref.seed(11)
    _assert_obs_equal(ours.reset(), ref.reset(), "reset")
    ends = np.zeros(2, int)
    for t, a in enumerate(actions):
        obs, rew, done, infos = ours.step(a)
        r_obs, r_rew, r_done, r_infos = ref.step(a)
        _assert_obs_equal(obs, r_obs, f"step {t}")
        assert rew.dtype == r_rew.dtype == np.float32 and done.dtype == r_done.dtype == bool
        np.testing.assert_array_equal(rew, r_rew, err_msg=f"step {t}")
        np.testing.assert_array_equal(done, r_done, err_msg=f"step {t}")
        for i, (info, r_info) in enumerate(zip(infos, r_infos)):
            assert set(info) == set(r_info), f"step {t} env {i}"
            for k, v in r_info.items():
                if k == "terminal_observation":
                    _assert_obs_equal(info[k], v, f"step {t} env {i} terminal")
                elif k in info_close:
                    assert info[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (t, i, k)
                else:
                    assert info[k] == v and type(info[k]) is type(v), (t, i, k, info[k], v)
            if done[i]:
                ends[int(r_info["TimeLimit.truncated"])] += 1
        for i in range(N):
            assert set(ours.reset_infos[i]) == set(ref.reset_infos[i])
    return ends


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_transitions_equal_dummy_vec_env(mode):
    """Plain gymnasium reward: CartPole with a 12-step time limit ends episodes both ways."""
    fns = [lambda: gym.make("CartPole-v1", max_episode_steps=12) for _ in range(N)]
    venv = gym.vector.SyncVectorEnv(fns) if mode == "sync" else gym.vector.AsyncVectorEnv(fns)
    ours = SB3VecEnv(venv)
    try:
        rng = np.random.default_rng(0)  # env 0 mostly pushes right: its pole falls within the time limit
        actions = [(rng.random(N) < [0.9, 0.5, 0.5]).astype(np.int64) for _ in range(60)]
        ends = _compare(ours, DummyVecEnv(fns), actions)
    finally:
        ours.close()
    assert ends[0] > 0 and ends[1] > 0  # terminations (pole fell) and truncations (time limit)


@pytest.fixture(scope="module")
def find_bank(tiny_model):
    return GoalBank(tiny_model, gym.make(FIND, **SMALL).unwrapped.task_set, num_negatives=5)


@pytest.fixture(scope="module")
def mixed_threshold(tiny_model, find_bank):
    """A beta under which some, not all, frames of the test rollout are VLM successes: from the same rollout
    scored without terminations, mid-gap (robust to float rounding across batch sizes)."""
    rm = RecordingRewardModel(RewardModel(tiny_model, find_bank, threshold=1.0))
    env = SB3VecEnv(VectorVLMRewardWrapper(gym.make_vec(FIND, N, **SMALL), rm))
    env.seed(11)
    env.reset()
    p = np.sort(np.concatenate([[info["vlm_prob"] for info in env.step(a)[3]] for a in _actions(24, 3)]))
    k = int(0.8 * len(p))
    k = k - 3 + int(np.argmax(np.diff(p)[k - 3:k + 3]))
    return float((p[k] + p[k + 1]) / 2)


def test_vlm_transitions_equal_dummy_vec_env_of_single_wrappers(tiny_model, find_bank, mixed_threshold):
    """SB3VecEnv(VectorVLMRewardWrapper) == DummyVecEnv(VLMRewardWrapper per env): observations (Dict), VLM
    rewards, episode ends (VLM successes, ground-truth successes, time limits), infos, terminal observations;
    and every frame the reward model scored is the frame after an action, never a reset observation."""
    rm = RecordingRewardModel(RewardModel(tiny_model, find_bank, threshold=mixed_threshold))
    ours = SB3VecEnv(VectorVLMRewardWrapper(gym.make_vec(FIND, N, **SMALL), rm, terminate_on_success=True))
    ref = DummyVecEnv([lambda: VLMRewardWrapper(gym.make(FIND, **SMALL), rm.inner, terminate_on_success=True)
                       for _ in range(N)])
    assert ours.observation_space == ref.observation_space and ours.action_space == ref.action_space
    actions = _actions(24, 3)
    ends = _compare(ours, ref, actions, info_close=("vlm_prob",))
    assert ends[0] > 0 and ends[1] > 0

    # replay: the frames scored at each step are the post-action frames SB3 saw
    rm.frames.clear()
    vlm_ended = 0
    ours.seed(11)
    ours.reset()
    for t, a in enumerate(actions):
        obs, rew, done, infos = ours.step(a)
        after = np.stack([info["terminal_observation"]["observation"] if d else obs["observation"][i]
                          for i, (info, d) in enumerate(zip(infos, done))])
        assert len(rm.frames) == t + 1 and np.array_equal(rm.frames[-1], after)  # one call, N frames, per step
        np.testing.assert_array_equal(rew, [info["vlm_reward"] for info in infos])
        vlm_ended += sum(d and not info["gt_success"] and not info["TimeLimit.truncated"]
                         for info, d in zip(infos, done))
    assert vlm_ended > 0  # the VLM ended episodes itself, not only the environment


def test_seed_options_and_sub_env_access(tiny_model, find_bank):
    rm = RewardModel(tiny_model, find_bank, threshold=1.0)
    ours = SB3VecEnv(VectorVLMRewardWrapper(gym.make_vec(FIND, N, **SMALL), rm))
    ref = DummyVecEnv([lambda: VLMRewardWrapper(gym.make(FIND, **SMALL), rm) for _ in range(N)])
    goal = find_bank.goals[4]
    for env in (ours, ref):
        assert env.seed(3) == [3, 4, 5]
        env.set_options({"goal": goal})
    _assert_obs_equal(ours.reset(), ref.reset())
    assert ours.get_attr("goal") == ref.get_attr("goal") == [goal] * N
    assert ours.reset_infos == ref.reset_infos
    ours.seed(0)
    ours.reset()  # options are used once
    assert ours.get_attr("goal") != [goal] * N

    other = find_bank.goals[7]
    ours.set_attr("goal_pool", (other,), indices=[1])
    assert ours.get_attr("goal_pool", indices=[0, 1]) == [ours.get_attr("goal_pool")[0], (other,)]
    success = ours.env_method("goal_success", goal, indices=[0, 2])
    assert success == [ours.venv.unwrapped.envs[i].unwrapped.goal_success(goal) for i in (0, 2)]
    assert ours.env_is_wrapped(gym.wrappers.OrderEnforcing) == [True] * N
    assert ours.env_is_wrapped(Monitor, indices=2) == [False]
    assert ours.has_attr("task_set") and not ours.has_attr("no_such_attribute")
    ours.set_options([{"goal": goal}, {}, {}])
    with pytest.raises(ValueError, match="one options dict"):
        ours.reset()


def test_render_close_and_async_limits(tiny_model):
    bank = GoalBank(tiny_model, gym.make(CARTPOLE).unwrapped.task_set)
    rm = RewardModel(tiny_model, bank, threshold=1.0)
    fns = [lambda: gym.make(CARTPOLE, render_mode="rgb_array") for _ in range(N)]
    ours = SB3VecEnv(VectorVLMRewardWrapper(gym.vector.SyncVectorEnv(fns), rm, goal="the pole is upright"))
    ref = DummyVecEnv(fns)
    for env in (ours, ref):
        env.seed(2)
        env.reset()
    assert ours.render_mode == "rgb_array"
    image = ours.render()
    assert image.shape == (2 * 400, 2 * 600, 3) and np.array_equal(image, ref.render())  # 3 frames tiled 2 x 2
    ours.close()
    assert ours.venv.unwrapped.closed

    venv = gym.vector.AsyncVectorEnv(fns)
    env = SB3VecEnv(venv)
    try:
        assert env.get_attr("goal", indices=[2]) == ["the pole is upright"]
        env.set_attr("goal_pool", ("the pole is leaning to the left",))
        assert env.get_attr("goal_pool") == [("the pole is leaning to the left",)] * N
        with pytest.raises(NotImplementedError, match="SyncVectorEnv"):
            env.set_attr("goal_pool", ("the pole is upright",), indices=[0])
        with pytest.raises(NotImplementedError, match="SyncVectorEnv"):
            env.env_method("goal_success", "the pole is upright", indices=[0])
        with pytest.raises(AttributeError, match="VecMonitor"):
            env.env_is_wrapped(Monitor)
        assert VecMonitor(env).num_envs == N  # VecMonitor takes the AttributeError for "no Monitor inside"
    finally:
        env.close()


def test_bad_input():
    with pytest.raises(TypeError, match="VectorEnv"):
        SB3VecEnv(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="NEXT_STEP"):
        SB3VecEnv(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync",
                               vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}))
    venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="async", vector_kwargs={"shared_memory": False})
    try:
        with pytest.raises(ValueError, match="shared_memory=True"):
            SB3VecEnv(venv)
    finally:
        venv.close()
    env = SB3VecEnv(gym.make_vec("CartPole-v1", 3))  # CartPole's own vector env resets every sub-env
    env.reset()
    with pytest.raises(RuntimeError, match="reset_mask"):
        for _ in range(30):  # pushing right in env 0 only: it falls first
            env.step(np.array([1, 0, 1]) if _ % 2 else np.array([1, 1, 0]))
    env = SB3VecEnv(gym.make_vec("CartPole-v1", 2, vectorization_mode="sync"))
    env.reset()
    with pytest.raises(RuntimeError, match="step_async"):
        env.step_wait()
    with pytest.raises(ValueError, match="window"):
        GroundTruthCallback(window=0)
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, n_epochs=1, device="cpu")
    with pytest.raises(KeyError, match="vlm_reward"):  # a plain env has no VLM reward to compare
        model.learn(8, callback=GroundTruthCallback())


def test_import_without_sb3_says_how_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "vlmreward.integrations.sb3")
    for name in [m for m in sys.modules if m.split(".")[0] == "stable_baselines3"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'vlmreward\[sb3\]'"):
        importlib.import_module("vlmreward.integrations.sb3")


class RewardsSeen(BaseCallback):
    """Keeps what SB3 saw at each step (before its time-limit bootstrap edits the rewards in place)."""

    def __init__(self):
        super().__init__()
        self.rewards, self.infos, self.dones = [], [], []

    def _on_step(self):
        self.rewards.append(self.locals["rewards"].copy())
        self.infos.append(self.locals["infos"])
        self.dones.append(self.locals["dones"].copy())
        return True


@pytest.mark.parametrize("env_id", [CARTPOLE, FIND])
def test_ppo_runs_through_the_adapter(env_id, tiny_model, find_bank, tmp_path):
    """SB3's PPO on the VLM reward of a real (tiny) open_clip model, through SB3VecEnv and VecMonitor; the
    rewards it trains on are the VLM rewards; GroundTruthCallback agrees with VecMonitor and the environment."""
    torch.manual_seed(0)
    if env_id == CARTPOLE:
        bank = GoalBank(tiny_model, gym.make(CARTPOLE).unwrapped.task_set)
        rm = RewardModel(tiny_model, bank, threshold=0.2)
        venv = gym.make_vec(CARTPOLE, 2, render_mode="rgb_array")
        policy, extra = "MultiInputPolicy", {}
    else:
        rm = RewardModel(tiny_model, find_bank, threshold=0.3)
        venv = gym.make_vec(FIND, 2, **SMALL)
        policy, extra = "MultiInputPolicy", {"policy_kwargs": {"net_arch": [32]}}
    env = VecMonitor(SB3VecEnv(VectorVLMRewardWrapper(venv, rm, terminate_on_success=env_id == FIND)))
    model = PPO(policy, env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu", **extra)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    gt, seen = GroundTruthCallback(window=10), RewardsSeen()
    model.learn(256, callback=[gt, seen])

    assert model.num_timesteps == 256 and len(seen.rewards) == 128
    for rewards, infos in zip(seen.rewards, seen.infos):
        np.testing.assert_array_equal(rewards, [info["vlm_reward"] for info in infos])
    episodes = [info["episode"] for infos in seen.infos for info in infos if "episode" in info]  # VecMonitor's
    assert len(episodes) == len(gt.vlm_returns) == len(gt.gt_returns) == len(gt.gt_successes) > 0
    np.testing.assert_allclose(gt.vlm_returns, [e["r"] for e in episodes], rtol=1e-5)
    assert gt.episode_lengths == [e["l"] for e in episodes]
    if env_id == CARTPOLE:  # gymnasium's CartPole reward: +1 per step
        assert gt.gt_returns == [float(n) for n in gt.episode_lengths]
    assert all(0.0 <= f <= 1.0 for f in gt.gt_success_fractions)
    with open(tmp_path / "progress.csv") as f:
        rows = list(csv.DictReader(f))
    logged = [r for r in rows if r["rollout/gt_return"]]
    assert logged and {"rollout/vlm_return", "rollout/gt_success", "rollout/gt_success_fraction"} <= set(rows[0])
    assert float(logged[-1]["rollout/gt_return"]) == pytest.approx(np.mean(gt.gt_returns[-10:]), rel=1e-4)


def test_docs_example_runs_with_a_tiny_budget(tmp_path):
    """docs/examples/sb3_cartpole.py, the code path of docs/integrations.md, on a few hundred steps."""
    spec = importlib.util.spec_from_file_location("sb3_cartpole", REPO / "docs" / "examples" / "sb3_cartpole.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "result.json"
    result = example.main(["--total-timesteps", "256", "--num-envs", "2", "--n-steps", "64", "--batch-size", "64",
                           "--eval-episodes", "2", "--eval-max-steps", "40", "--out", str(out)])
    assert json.loads(out.read_text()) == result
    assert result["total_timesteps"] == 256 and result["model"] == "default"
    for when in ("before", "after"):  # CartPole: +1 per step, so 1..40 under the 40-step limit
        returns = result["eval"][when]["gt_return"]
        assert len(returns) == 2 and all(1 <= r <= 40 for r in returns)
        assert result[f"gt_return_{when}"] == pytest.approx(np.mean(returns))
    curve = result["training_episodes"]["curve"]
    assert result["training_episodes"]["count"] == sum(c["episodes"] for c in curve) > 0


def test_masked_reset_keeps_the_goals_of_running_episodes(tiny_model):
    goals = ["a cart on a track", "a pole", "a blue sky", "a red car"]
    rm = RewardModel(tiny_model, GoalBank(tiny_model, goals), threshold=1.0)
    venv = gym.make_vec("CartPole-v1", N, vectorization_mode="sync", render_mode="rgb_array")
    env = SB3VecEnv(VectorVLMRewardWrapper(venv, rm, goal=lambda rng: goals[int(rng.integers(len(goals)))]))
    env.seed(0)
    prev = env.reset()["goal_id"]
    for t in range(20):  # env 0 pushes right only: its episodes end first, the others keep running
        obs, _, done, _ = env.step(np.array([1, t % 2, (t + 1) % 2]))
        running = ~done
        np.testing.assert_array_equal(obs["goal_id"][running], prev[running], err_msg=f"step {t}")
        prev = obs["goal_id"]
