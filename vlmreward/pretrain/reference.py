"""Reference rewards of a model on a fixed set of frames (stability check of the shipped default model).

The frames are the first frames (``reset(seed=0)``) of every registered environment; the goals are the
training goals named below with negatives from the same list. ``reference_rewards(vlm)`` returns
{"frames": [[env_id, seed], ...], "goals": [...], "num_negatives": N, "probs": (frames x goals) list}, plus for
a model with a relation head ``"relation_goals"`` and ``"relation_probs"``: two-object goals scored by the head
against each other; the export stores it as ``reference_rewards.json`` beside the weights and the tests
recompute it.
"""
from __future__ import annotations

import numpy as np

REFERENCE_FILE = "reference_rewards.json"
GOALS = ("the pole is upright", "the car is at the top of the hill next to the flag", "go to the purple ball",
         "pick up the yellow key", "put the grey box next to the purple key")
NUM_NEGATIVES = 3
RELATION_GOALS = ("put the grey box next to the purple key", "put the purple key next to the grey box",
                  "put the red ball next to the green key", "put the white cup next to the blue ring")


def reference_rewards(vlm, seed: int = 0) -> dict:
    """p(goal | frame) (paper eq. 1) of ``vlm`` for the reference frames and goals; float lists."""
    import gymnasium as gym

    import vlmreward.envs as envs
    from vlmreward.goals import GoalBank
    from vlmreward.reward import RewardModel
    frames = []
    for env_id in envs.ENV_IDS:
        env = gym.make(env_id, render_mode="rgb_array")
        env.reset(seed=seed)
        frames.append(np.asarray(env.render()))
        env.close()
    bank = GoalBank(vlm, list(GOALS), negatives=list(GOALS), num_negatives=NUM_NEGATIVES, seed=0)
    rm = RewardModel(vlm, bank, mode="probability")
    probs = np.stack([rm(f[None]).probs[0].double().cpu().numpy() for f in frames])
    out = {"frames": [[e, seed] for e in envs.ENV_IDS], "goals": list(GOALS), "num_negatives": NUM_NEGATIVES,
           "probs": probs.tolist()}
    if getattr(vlm, "relation_head", None) is not None:
        rm = RewardModel(vlm, GoalBank(vlm, list(RELATION_GOALS)), mode="probability", scorer="relation")
        out["relation_goals"] = list(RELATION_GOALS)
        out["relation_probs"] = np.stack([rm(f[None]).probs[0].double().cpu().numpy() for f in frames]).tolist()
    return out
