"""Training throughput, side by side in one run: environment steps per second of

* ``env``: the vector environments alone, random actions;
* ``env+vlm``: the same with the VLM reward of the default model (``VectorVLMRewardWrapper``, one call per step);
* ``train-vlm``: ``vlmreward train`` on the VLM reward (rollout + PPO update), the shipped config's settings;
* ``train-gt``: the same on the ground-truth reward;

for Find (``--config find``: 32 envs, hindsight relabelling), Find with the settings before issue 15 (``find
[before]``: room view, a 3-layer 3x3 convolutional policy) and CartPoleUpright (``--config cartpole``).
Run: ``pytest bench/bench_training.py -s -p no:cacheprovider`` (BENCH_ITERATIONS, default 4, PPO iterations per
training case; BENCH_THREADS, default 1, torch threads). Speed is reported as env steps/s and as the learner's
share of a training step (1 - env+vlm time / train-vlm time, per step).
"""
import argparse
import dataclasses
import os
import time

import numpy as np
import pytest
import torch

import vlmreward  # noqa: F401  (registers the environments)
from vlmreward.rl import ppo
from vlmreward.rl.task import Task, make_envs

ITERATIONS = int(os.environ.get("BENCH_ITERATIONS", "4"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
CONFIGS = {"vlmreward/Find-v0": ("find", {}),
           "vlmreward/Find-v0 [before]": ("find", dict(view="room", frame_source="auto", depth=3)),
           "vlmreward/CartPoleUpright-v0": ("cartpole", {})}
RESULTS: dict = {}


def _args(env_id: str, reward: str, tmp_path) -> ppo.Args:
    config, overrides = CONFIGS[env_id]
    args = ppo.parse_args(argparse.Namespace(config=config))
    return dataclasses.replace(args, reward=reward, **overrides, threads=THREADS, progress=False, eval_interval=0,
                               eval_episodes=0, checkpoint_interval=10 ** 6, run_dir=str(tmp_path / reward),
                               total_timesteps=ITERATIONS * args.num_envs * args.num_steps)


@pytest.mark.parametrize("case", ["env", "env+vlm", "train-vlm", "train-gt"])
@pytest.mark.parametrize("env_id", list(CONFIGS))
def test_training_throughput(benchmark, tmp_path, env_id, case):
    torch.set_num_threads(THREADS)
    args = _args(env_id, "gt" if case in ("env", "train-gt") else "vlm", tmp_path)
    steps = ITERATIONS * args.num_envs * args.num_steps
    if case.startswith("train"):
        def run():
            return ppo.train(args)["steps_per_second"]
        sps = benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        task = Task(args, torch.device("cpu"))
        envs = make_envs(task, args.num_envs, task.train_goals)
        envs.reset(seed=0)
        rng = np.random.default_rng(0)
        actions = [rng.integers(0, task.num_actions, args.num_envs) for _ in range(steps // args.num_envs)]

        def run():
            t = time.perf_counter()
            for a in actions:
                envs.step(a)
            return steps / (time.perf_counter() - t)
        sps = benchmark.pedantic(run, rounds=1, iterations=1)
        envs.close()
    RESULTS[(env_id, case)] = sps
    benchmark.extra_info["env_steps_per_s"] = sps
    print(f"\n{env_id} {case}: {sps:.0f} env steps/s ({args.num_envs} envs, {THREADS} thread(s))")
    if all((env_id, c) in RESULTS for c in ("env+vlm", "train-vlm", "train-gt")):
        env_vlm, train_vlm = RESULTS[(env_id, "env+vlm")], RESULTS[(env_id, "train-vlm")]
        print(f"{env_id}: learner share of a VLM training step {1 - train_vlm / env_vlm:.0%} "
              f"(env {RESULTS.get((env_id, 'env'), float('nan')):.0f}, env+vlm {env_vlm:.0f}, train-vlm "
              f"{train_vlm:.0f}, train-gt {RESULTS[(env_id, 'train-gt')]:.0f} env steps/s)")
    now, before = (RESULTS.get(("vlmreward/Find-v0" + tag, case)) for tag in ("", " [before]"))
    if now and before and env_id.startswith("vlmreward/Find-v0"):
        print(f"vlmreward/Find-v0 {case}: find config / before = {now / before:.2f}x")
