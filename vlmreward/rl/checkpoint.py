"""Checkpoints of ``vlmreward train``: tensors and plain data only, read without unpickling code.

A checkpoint (``<run_dir>/checkpoint.pt``) is a dict: "agent" and "optimizer" (state dicts), "iteration",
"global_step" (ints), and "meta", a JSON string with the run's Args, the goals, the environment keyword
arguments, the observation shape, the number of actions and the last evaluation. It is written atomically
(:mod:`vlmreward.fileio`) and loaded with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
from pathlib import Path

from vlmreward import fileio

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(path, *, agent, optimizer, iteration: int, global_step: int, meta: dict) -> None:
    """Atomic write: a kill leaves the old checkpoint or the new one, never a torn file."""
    fileio.torch_save(path, {"agent": agent.state_dict(), "optimizer": optimizer.state_dict(),
                             "iteration": int(iteration), "global_step": int(global_step),
                             "meta": json.dumps(meta)})


def checkpoint_path(path) -> Path:
    """A checkpoint file, or the run folder holding ``checkpoint.pt``."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() else path


def load_checkpoint(path) -> dict:
    """Loads a trainer checkpoint (file or run folder); "meta" is decoded into a dict.

    Raises FileNotFoundError (no file) or ValueError naming the file (corrupt, holds code or objects, or is
    not a ``vlmreward train`` checkpoint)."""
    path = checkpoint_path(path)
    state = fileio.torch_load(path, what="checkpoint")
    try:
        state["meta"] = json.loads(state["meta"])
        state["meta"]["args"], state["agent"], state["iteration"]  # noqa: B018  (the keys every reader needs)
    except (TypeError, KeyError, ValueError) as e:
        raise ValueError(f"{path} is not a vlmreward train checkpoint ({type(e).__name__}: {e})") from None
    return state


def build_agent(state: dict):
    """The agent of a checkpoint, weights loaded, in eval mode."""
    from vlmreward.rl.agent import Agent

    a, meta = state["meta"]["args"], state["meta"]
    agent = Agent(meta["observation_shape"], meta["num_actions"], state["agent"]["goal_embeddings"],
                  image_size=a["image_size"], patch=a["patch"], channels=a["channels"], hidden=a["hidden"],
                  goal_heads=a["goal_heads"], depth=a.get("depth", 3), precision=a["policy_precision"],
                  wording_embeddings=state["agent"].get("wording_embeddings"))
    agent.load_state_dict(state["agent"])
    return agent.eval()
