"""Vector-env steps per second with and without the VLM reward (pytest-benchmark).

    PYTHONPATH=. python -m pytest bench/bench_envs.py --benchmark-columns=mean,rounds -s

Domains: vlmreward/Find-v0 (224x224 frame observations) and vlmreward/CartPoleUpright-v0 (400x600 rendered
frames); 8 and 32 sub-environments in a SyncVectorEnv. The reward model is ``load_model("default")`` when
vlmreward/assets/default/ holds a model, else the small registered architecture VLMR-ViT-T-12-84 with random
weights (the same compute as a trained one). Each case prints env steps/s and the share of the step time
spent inside the reward-model call. Without the reward, CartPole does not render (its observation is the state);
Find always renders (the frame is its observation).
"""
import os
import time

import gymnasium as gym
import numpy as np
import pytest
import torch

import vlmreward  # noqa: F401
from vlmreward.goals import GoalBank
from vlmreward.models import CONFIG_NAME, DEFAULT_MODEL_DIR, load_model
from vlmreward.reward import RewardModel
from vlmreward.wrappers import VectorVLMRewardWrapper

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
STEPS = 4  # vector steps per round


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    if (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
        return load_model("default")
    return load_model("VLMR-ViT-T-12-84", "random")


class TimedRewardModel:
    """The RewardModel, accumulating the wall time spent in its calls."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        return out


@pytest.mark.parametrize("with_reward", [False, True], ids=["env", "env+vlm"])
@pytest.mark.parametrize("num_envs", [8, 32])
@pytest.mark.parametrize("env_id", ["vlmreward/Find-v0", "vlmreward/CartPoleUpright-v0"])
def test_vector_step(benchmark, model, env_id, num_envs, with_reward):
    envs = gym.make_vec(env_id, num_envs=num_envs, render_mode="rgb_array")
    timed = None
    if with_reward:
        timed = TimedRewardModel(RewardModel(model, GoalBank(model, envs.get_attr("task_set")[0],
                                                             num_negatives=4)))
        envs = VectorVLMRewardWrapper(envs, timed, terminate_on_success=False)
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = [rng.integers(0, envs.single_action_space.n, num_envs) for _ in range(STEPS)]

    def steps():
        for a in actions:
            envs.step(a)

    steps()  # warm-up (tile caches, allocator)
    if timed:
        timed.seconds = 0.0
    benchmark.pedantic(steps, rounds=ROUNDS, iterations=1)
    if benchmark.disabled:  # --benchmark-disable (the CI smoke run): the code ran once, nothing to report
        envs.close()
        return
    per_step = benchmark.stats.stats.mean / STEPS
    share = timed.seconds / (benchmark.stats.stats.total) if timed else 0.0
    benchmark.extra_info.update(env_steps_per_s=num_envs / per_step, reward_share=share)
    print(f"\n{env_id} B={num_envs} {'with' if with_reward else 'without'} VLM reward: "
          f"{num_envs / per_step:.0f} env steps/s, reward share {share:.0%}")
    envs.close()
