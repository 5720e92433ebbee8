"""`vlmreward enjoy`: record a trained agent (a `vlmreward train` checkpoint) as a GIF or MP4.

Frames are the environment's own renders (uint8 (H,W,3)); the episodes run in the environment the agent
was trained on, with its goals chosen per episode (``--goal``) or cycled over the training goals. Ground-truth
success of each episode is printed. MP4 needs an imageio video plugin (``pip install imageio-ffmpeg``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt of `vlmreward train` (or its run folder)")
    parser.add_argument("--out", default=None, help="output .gif or .mp4 (default: <run folder>/rollout.gif)")
    parser.add_argument("--goal", action="append", default=None,
                        help="goal of the episodes (repeat for several; default: cycle the training goals)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to record")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    parser.add_argument("--deterministic", action="store_true", help="greedy actions instead of sampling")
    parser.add_argument("--fps", type=int, default=8, help="frames per second of the video")


def record(checkpoint, out=None, *, goals=None, episodes: int = 3, seed: int = 0, deterministic: bool = False,
           fps: int = 8) -> dict:
    """Runs ``episodes`` episodes of the checkpoint's agent and writes their frames to ``out``.

    Returns {"path", "frames", "success": list[bool] per episode, "goals"}.
    Raises FileNotFoundError (checkpoint), ValueError (goal outside the agent's goals, bad output suffix,
    episodes < 1), RuntimeError (MP4 without a video plugin).
    """
    import gymnasium as gym
    import imageio.v2 as imageio

    import vlmreward  # noqa: F401  (registers the environments)
    from vlmreward.agent import Agent
    from vlmreward.ppo import Args, NoSuccessTermination, load_checkpoint

    state = load_checkpoint(checkpoint)
    run_dir = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    out = Path(out) if out is not None else run_dir / "rollout.gif"
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"output must end in .gif or .mp4, got {out.name!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    args = Args(**state["args"])
    names = list(state["goals"])
    language = names != [""]
    train_goals = list(args.train_goals or []) or [g for g in state.get("train_goals", names) if g]
    goals = list(goals) if goals else (train_goals if language else [""])
    for g in goals:
        if g not in names:
            raise ValueError(f"goal {g!r} is not one of the agent's goals (the task set of {args.env_id}, e.g. "
                             f"{names[0]!r})")
    agent = Agent(state["observation_shape"], state["num_actions"], state["agent"]["goal_embeddings"],
                  image_size=args.image_size, patch=args.patch, channels=args.channels,
                  hidden=args.hidden, goal_heads=args.goal_heads)
    agent.load_state_dict(state["agent"])
    agent.eval()

    kwargs = dict(state["env_kwargs"], render_mode="rgb_array")
    env = gym.make(args.env_id, **kwargs)
    if args.reward == "vlm" and language and len(names) > 1:
        env = NoSuccessTermination(env)  # as in training: only the VLM (absent here) or a timeout ends it
    frames, successes = [], []
    rng = np.random.default_rng(seed)
    try:
        for e in range(episodes):
            goal = goals[e % len(goals)]
            obs, info = env.reset(seed=int(rng.integers(2 ** 31)), options={"goal": goal} if language else None)
            gid = torch.tensor([names.index(goal)])
            frames.append(env.render())
            success = False
            while True:
                with torch.no_grad():
                    action, *_ = agent.get_action_and_value(agent.prepare(np.asarray(obs)[None]), gid,
                                                            deterministic=deterministic)
                obs, _, terminated, truncated, info = env.step(int(action[0]))
                frames.append(env.render())
                success = success or bool(info.get("success", False))
                # with the VLM absent, an episode of a goal-reaching domain ends at ground-truth success
                if terminated or truncated or (language and len(names) > 1 and success):
                    break
            successes.append(success)
            print(f"episode {e}: goal {goal!r}: ground-truth success {success} ({len(frames)} frames so far)")
    finally:
        env.close()
    if out.suffix.lower() == ".mp4":
        try:
            imageio.mimsave(out, frames, fps=fps)
        except Exception as err:  # no ffmpeg / pyav plugin
            raise RuntimeError(f"cannot write {out}: {err}; install a video plugin (pip install imageio-ffmpeg) "
                               "or write a .gif") from err
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimsave(out, frames, duration=1000.0 / fps, loop=0)
    return {"path": str(out), "frames": len(frames), "success": successes, "goals": goals[:episodes]}


def run(namespace: argparse.Namespace) -> int:
    result = record(namespace.checkpoint, namespace.out, goals=namespace.goal, episodes=namespace.episodes,
                    seed=namespace.seed, deterministic=namespace.deterministic, fps=namespace.fps)
    print(f"ground-truth success: {np.mean(result['success']):.0%} of {len(result['success'])} episodes")
    print(f"video: {result['path']}")
    return 0
