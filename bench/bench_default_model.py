"""Reward throughput of the default model: frames/s at batch 64, end to end from uint8 frames (pytest-benchmark).

    PYTHONPATH=. python -m pytest bench/bench_default_model.py --benchmark-columns=mean,ops,rounds -s

One call = ``RewardModel(frames (64,H,W,3) uint8, goal_ids)``: preprocess kernel (resize + normalise) ->
image tower -> reward head (softmax over goal + N negatives, threshold). Frames: MiniGrid 224x224 (Find) and
classic-control 400x600 (CartPole), real environment frames. Falls back to the default architecture with
random weights (same compute) when vlmreward/assets/default/ holds no model.
"""
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import vlmreward  # noqa: F401
from vlmreward.goals import GoalBank
from vlmreward.models import CONFIG_NAME, DEFAULT_MODEL_DIR, load_model
from vlmreward.reward import RewardModel

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
BATCH = 64


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
        return load_model("default")
    return load_model("VLMR-ConvMixer-256-4-84-MiniLM", "random")


def _frames(env_id: str) -> np.ndarray:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frames = []
    for _ in range(BATCH):
        frames.append(np.asarray(env.render()))
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    env.close()
    return np.stack(frames)


@pytest.mark.parametrize("env_id", ["vlmreward/Find-v0", "vlmreward/CartPoleUpright-v0"])
def test_reward_throughput(benchmark, model, env_id):
    env = gym.make(env_id)
    task = list(env.unwrapped.task_set)
    env.close()
    bank = GoalBank(model, task, num_negatives=min(8, len(task) - 1))
    rm = RewardModel(model, bank, threshold=0.5)
    frames = torch.from_numpy(_frames(env_id))
    ids = torch.zeros(BATCH, dtype=torch.int64)
    out = benchmark.pedantic(rm, args=(frames, ids), rounds=int(os.environ.get("BENCH_ROUNDS", "5")),
                             warmup_rounds=1)
    assert out.rewards.shape == (BATCH,)
    fps = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info["frames_per_s"] = fps
    print(f"\n{env_id} {tuple(frames.shape)}: {fps:.0f} frames/s at batch {BATCH} ({model.identity})")
