"""`vlmreward enjoy`: record a trained agent (a `vlmreward train` checkpoint) as a GIF or MP4.

Frames are the environment's own renders (uint8 (H,W,3)); the episodes run in the environment the agent
was trained on, with its goals chosen per episode (``--goal``) or cycled over the training goals, and end as
the environment's own episodes do (no reward model runs here): a goal-reaching environment ends at
ground-truth success, a per-step one (CartPoleUpright) on failure or timeout. Ground-truth success of each
episode (any step) is printed and written on the frames: a strip above each frame with the episode's goal,
green from the first successful step on. MP4 needs an imageio video plugin (``pip install imageio-ffmpeg``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vlmreward import fileio


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt of `vlmreward train` (or its run folder)")
    parser.add_argument("--out", default=None, help="output .gif or .mp4 (default: <run folder>/rollout.gif)")
    parser.add_argument("--goal", action="append", default=None,
                        help="goal of the episodes (repeat for several; default: cycle the training goals)")
    parser.add_argument("--episodes", type=int, default=3, help="episodes to record")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes")
    parser.add_argument("--deterministic", action="store_true", help="greedy actions instead of sampling")
    parser.add_argument("--fps", type=int, default=8, help="frames per second of the video")


def caption_scale(width: int, texts) -> int:
    """The smallest integer factor k at which every one of ``texts`` fits a frame k * ``width`` pixels wide in
    Pillow's default font (6 px a character)."""
    return max(1, *(-(-(6 * len(t) + 6) // width) for t in texts))


def caption(frame: np.ndarray, text: str, success: bool, scale: int | None = None) -> np.ndarray:
    """``frame`` uint8 (H, W, 3), enlarged by the integer factor k = ``scale`` (default: the smallest at which
    ``text`` fits, :func:`caption_scale`; nearest neighbour), with a strip of height max(14, kH // 12) above it
    holding ``text`` (white, green once ``success``); returns a new uint8 (kH + strip, kW, 3) array."""
    from PIL import Image, ImageDraw
    k = caption_scale(frame.shape[1], [text]) if scale is None else int(scale)
    frame = np.repeat(np.repeat(frame, k, 0), k, 1) if k > 1 else frame
    h, w = frame.shape[:2]
    strip = max(14, h // 12)
    img = Image.new("RGB", (w, h + strip))
    img.paste(Image.fromarray(np.ascontiguousarray(frame)), (0, strip))
    ImageDraw.Draw(img).text((3, (strip - 11) // 2), text, fill=(80, 230, 80) if success else (255, 255, 255))
    return np.asarray(img)


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
    from vlmreward.rl.checkpoint import build_agent, checkpoint_path, load_checkpoint

    state = load_checkpoint(checkpoint)
    out = Path(out) if out is not None else checkpoint_path(checkpoint).parent / "rollout.gif"
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"output must end in .gif or .mp4, got {out.name!r}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    meta = state["meta"]
    names = list(meta["goals"])
    language = names != [""]
    goals = list(goals) if goals else ([g for g in meta["train_goals"] if g] if language else [""])
    for g in goals:
        if g not in names:
            raise ValueError(f"goal {g!r} is not one of the agent's goals (the task set of "
                             f"{meta['args']['env_id']}, e.g. {names[0]!r})")
    agent = build_agent(state)
    env = gym.make(meta["args"]["env_id"], **dict(meta["env_kwargs"], render_mode="rgb_array"))
    frames, successes = [], []
    rng = np.random.default_rng(seed)
    scale = None  # one caption scale for every goal, so that all frames of the video have one size
    try:
        for e in range(episodes):
            goal = goals[e % len(goals)]
            obs, info = env.reset(seed=int(rng.integers(2 ** 31)), options={"goal": goal} if language else None)
            gid = torch.tensor([names.index(goal)])
            success = False
            frame = env.render()
            if language and scale is None:
                scale = caption_scale(frame.shape[1], goals[:episodes])
            frames.append(caption(frame, goal, success, scale) if language else frame)
            while True:
                with torch.no_grad():
                    action, *_ = agent.get_action_and_value(agent.prepare(np.asarray(obs)[None]), gid,
                                                            deterministic=deterministic)
                obs, _, terminated, truncated, info = env.step(int(action[0]))
                success = success or bool(info.get("success", False))
                frames.append(caption(env.render(), goal, success, scale) if language else env.render())
                if terminated or truncated:
                    break
            successes.append(success)
            print(f"episode {e}: goal {goal!r}: ground-truth success {success} ({len(frames)} frames so far)")
    finally:
        env.close()
    suffix = out.suffix.lower()
    if suffix == ".mp4":
        try:
            fileio.write_with(out, lambda tmp: imageio.mimsave(tmp, frames, format=suffix, fps=fps))
        except Exception as err:  # no ffmpeg / pyav plugin
            raise RuntimeError(f"cannot write {out}: {err}; install a video plugin (pip install imageio-ffmpeg) "
                               "or write a .gif") from err
    else:
        fileio.write_with(out, lambda tmp: imageio.mimsave(tmp, frames, format=suffix, duration=1000.0 / fps, loop=0))
    return {"path": str(out), "frames": len(frames), "success": successes, "goals": goals[:episodes]}


def run(namespace: argparse.Namespace) -> int:
    result = record(namespace.checkpoint, namespace.out, goals=namespace.goal, episodes=namespace.episodes,
                    seed=namespace.seed, deterministic=namespace.deterministic, fps=namespace.fps)
    print(f"ground-truth success: {np.mean(result['success']):.0%} of {len(result['success'])} episodes")
    print(f"video: {result['path']}")
    return 0
