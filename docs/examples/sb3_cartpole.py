"""stable-baselines3 PPO on vlmreward/CartPoleUpright-v0, trained only on the VLM reward of the default model.

Goal "the pole is upright"; reward 1[p(goal | frame after the action) > beta] at every step, episodes not ending on
success (``terminate_on_success=False``): they end when the pole falls or after 500 steps (gymnasium's CartPole).
The ground truth, CartPole's own return (+1 per step alive, ``info["env_reward"]``), never reaches the learner:
it is evaluated before and after training (deterministic policy, one episode per evaluation env) and logged
during training by ``GroundTruthCallback``. See docs/integrations.md.

    python docs/examples/sb3_cartpole.py --total-timesteps 50000 --out docs/results/sb3_cartpole.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecMonitor

import vlmreward  # registers the environments
from vlmreward import GoalBank, RewardModel, load_model
from vlmreward.integrations.sb3 import GroundTruthCallback, SB3VecEnv
from vlmreward.wrappers import VectorVLMRewardWrapper

ENV_ID = "vlmreward/CartPoleUpright-v0"
GOAL = "the pole is upright"


def make_env(reward_model, num_envs: int, max_episode_steps: int | None = None) -> SB3VecEnv:
    """SB3 VecEnv of ``num_envs`` CartPoleUpright envs rewarded by the VLM every step the pole looks upright."""
    kwargs = {"max_episode_steps": max_episode_steps} if max_episode_steps else {}
    envs = gym.make_vec(ENV_ID, num_envs, render_mode="rgb_array", **kwargs)
    return SB3VecEnv(VectorVLMRewardWrapper(envs, reward_model, goal=GOAL, terminate_on_success=False))


def evaluate(model, env: SB3VecEnv, seed: int) -> dict:
    """One episode per sub-env with the deterministic policy: ground-truth and VLM returns, float lists."""
    env.seed(seed)
    obs = env.reset()
    gt, vlm = np.zeros(env.num_envs), np.zeros(env.num_envs)
    running = np.ones(env.num_envs, bool)
    while running.any():
        actions, _ = model.predict(obs, deterministic=True)
        obs, _, dones, infos = env.step(actions)
        gt += running * np.array([info["env_reward"] for info in infos])
        vlm += running * np.array([info["vlm_reward"] for info in infos])
        running &= ~dones
    return {"gt_return": gt.tolist(), "vlm_return": vlm.tolist()}


def training_curve(callback: GroundTruthCallback, bin_steps: int, total_timesteps: int) -> list[dict]:
    """Means of the training episodes' returns per bin of ``bin_steps`` timesteps (by the episode's end);
    "timesteps" is the bin's upper end."""
    ends = np.array(callback.episode_end_timesteps)
    curve = []
    for start in range(0, total_timesteps, bin_steps):
        sel = (ends > start) & (ends <= start + bin_steps)
        if sel.any():
            curve.append({"timesteps": min(start + bin_steps, total_timesteps), "episodes": int(sel.sum()),
                          "gt_return": round(float(np.mean(np.array(callback.gt_returns)[sel])), 1),
                          "vlm_return": round(float(np.mean(np.array(callback.vlm_returns)[sel])), 1)})
    return curve


def machine() -> str:
    try:
        lscpu = dict(line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True,
                                                                 check=True).stdout.splitlines() if ":" in line)
        return f"{lscpu['Model name'].strip()}, {lscpu['CPU(s)'].strip()} CPUs ({platform.machine()}, lscpu)"
    except (OSError, subprocess.CalledProcessError, KeyError):
        return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--total-timesteps", type=int, default=50_000)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=32, help="PPO rollout length per env")
    parser.add_argument("--batch-size", type=int, default=256, help="PPO minibatch size")
    parser.add_argument("--threshold", type=float, default=0.25,
                        help="beta; 0.25: the default model's best-F1 threshold on CartPole (vlmreward/configs/cartpole.yaml)")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--eval-max-steps", type=int, default=None, help="time limit of evaluation episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", default=None, help="write the result JSON here")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    model_vlm = load_model("default")
    task_set = gym.make(ENV_ID).unwrapped.task_set  # negatives: the other goals of the task set
    reward_model = RewardModel(model_vlm, GoalBank(model_vlm, task_set, seed=args.seed), threshold=args.threshold)
    env = VecMonitor(make_env(reward_model, args.num_envs))
    eval_env = make_env(reward_model, args.eval_episodes, args.eval_max_steps)

    # stable-baselines3 zoo's PPO hyperparameters for CartPole-v1
    ppo = dict(n_steps=args.n_steps, batch_size=args.batch_size, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0)
    agent = PPO("MultiInputPolicy", env, learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
                clip_range=LinearSchedule(0.2, 0.0, 1.0), seed=args.seed, device="cpu", verbose=0, **ppo)
    before = evaluate(agent, eval_env, seed=1000)
    callback = GroundTruthCallback()
    t_train = time.perf_counter()
    agent.learn(args.total_timesteps, callback=callback)
    train_s = time.perf_counter() - t_train
    after = evaluate(agent, eval_env, seed=1000)
    env.close()
    eval_env.close()

    result = {
        "script": "docs/examples/sb3_cartpole.py", "argv": argv, "env_id": ENV_ID, "goal": GOAL,
        "model": "default", "threshold": args.threshold, "terminate_on_success": False,
        "algorithm": "stable_baselines3.PPO MultiInputPolicy", "ppo": {**ppo, "learning_rate": "linear 1e-3 -> 0",
                                                                      "clip_range": "linear 0.2 -> 0"},
        "num_envs": args.num_envs, "total_timesteps": int(agent.num_timesteps), "seed": args.seed,
        "gt_return_before": float(np.mean(before["gt_return"])), "gt_return_after": float(np.mean(after["gt_return"])),
        "vlm_return_before": float(np.mean(before["vlm_return"])),
        "vlm_return_after": float(np.mean(after["vlm_return"])),
        "eval": {"episodes": args.eval_episodes, "max_steps": args.eval_max_steps or 500, "seed": 1000,
                 "before": before, "after": after},
        "training_episodes": {"count": len(callback.gt_returns),
                              "curve": training_curve(callback, max(args.total_timesteps // 10, 1),
                                                      agent.num_timesteps)},
        "train_wall_time_s": round(train_s, 1), "wall_time_s": round(time.perf_counter() - t0, 1),
        "machine": machine(), "torch_threads": torch.get_num_threads(), "date": datetime.date.today().isoformat(),
        "versions": {"vlmreward": getattr(vlmreward, "__version__", "0.1.0"),
                     "stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__,
                     "gymnasium": gym.__version__},
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(f"ground-truth return {result['gt_return_before']:.1f} -> {result['gt_return_after']:.1f} "
          f"({result['total_timesteps']} steps, {result['wall_time_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
