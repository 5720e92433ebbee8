"""`vlmreward evaluate-agent`: ground-truth success of a trained agent (a `vlmreward train` checkpoint).

The episodes run as in training (the checkpoint's environment, view, episode length and reward model, so the
VLM return is reported beside the ground truth) over its training goals and its held-out goals, ``episodes``
each, goals cycled; success = ground-truth success at any step (:func:`vlmreward.rl.task.evaluate_agent`).
The numbers of docs/results/training.md's 200-episode columns come from this command.
"""
from __future__ import annotations

import argparse
import json

import torch

from vlmreward import fileio


def evaluate_checkpoint(checkpoint, episodes: int = 200, seed: int = 12345, threads: int = 1,
                        max_attempts="checkpoint") -> dict:
    """{"train": ..., "heldout": ...} of :func:`~vlmreward.rl.task.evaluate_agent` for a checkpoint (file or run
    folder), plus "checkpoint", "global_step", "reward" ('vlm' | 'gt': what it was trained on), "episodes", "seed",
    "max_attempts"; actions are sampled from the policy under ``torch.manual_seed(seed)``. ``max_attempts``:
    the household environments' (None: free attempts, the paper's task), default the checkpoint's own.
    Raises FileNotFoundError / ValueError for a missing or unreadable checkpoint, ValueError for episodes < 1."""
    from vlmreward.rl.checkpoint import build_agent, checkpoint_path, load_checkpoint
    from vlmreward.rl.ppo import Args
    from vlmreward.rl.task import Task, evaluate_agent

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    state = load_checkpoint(checkpoint)
    args = Args(**state["meta"]["args"])  # as ppo.train's resume reads them
    if max_attempts != "checkpoint":
        args.max_attempts = max_attempts
    torch.set_num_threads(threads)
    task = Task(args, torch.device("cpu"), fire_check=False)  # a good agent may hold its goal on every frame
    agent = build_agent(state)
    out = {"checkpoint": str(checkpoint_path(checkpoint)), "global_step": state["global_step"],
           "reward": args.reward, "episodes": episodes, "seed": seed, "max_attempts": args.max_attempts}
    for split, goals in (("train", task.train_goals), ("heldout", task.heldout_goals)):
        torch.manual_seed(seed)  # the policy samples its actions: seeded, the result is reproducible
        out[split] = evaluate_agent(agent, task, list(goals), episodes, seed=seed)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint.pt of `vlmreward train` (or its run folder)")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per split (training / held-out goals)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the evaluation episodes")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--max-attempts", type=_attempts, default=argparse.SUPPRESS,
                        help="household Lift / PickPlace: attempts per episode, N or 'none' (free attempts, the "
                             "paper's task); default: as the checkpoint was trained")
    parser.add_argument("--out", default=None, help="also write the result as JSON here")


def _attempts(text: str):
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'none', got {text!r}") from None


def run(namespace: argparse.Namespace) -> int:
    result = evaluate_checkpoint(namespace.checkpoint, namespace.episodes, namespace.seed, namespace.threads,
                                 getattr(namespace, "max_attempts", "checkpoint"))
    for split, name in (("train", "training goals"), ("heldout", "held-out goals")):
        r = result[split]
        if r["episodes"]:
            vlm = f", VLM return {r['vlm_return']:.2f}" if result["reward"] == "vlm" else ""
            print(f"ground-truth success on {name}: {r['success']:.3f} ({r['episodes']} episodes, "
                  f"ground-truth return {r['gt_return']:.2f}{vlm})")
    if namespace.out:
        fileio.write_json(namespace.out, result, indent=1)
    print(json.dumps({k: result[k] for k in ("global_step", "episodes", "seed")}))
    return 0
