"""What a Lift agent does: python lift_behaviour.py RUN_DIR (a `vlmreward train --config lift` run).

100 episodes over its training goals (the checkpoint's environment settings, stochastic policy, seeded); counts
episodes with ground-truth success, with any pickup, whose FIRST pickup was not the goal object, in which the agent
faced the goal object at some step, and drop actions while carrying. Prints one dict.
"""
import sys

import gymnasium as gym
import numpy as np
import torch

import vlmreward  # noqa: F401  (registers the environments)
from vlmreward.rl.checkpoint import build_agent, load_checkpoint

torch.set_num_threads(1)
torch.manual_seed(0)
state = load_checkpoint(sys.argv[1])
meta, agent = state["meta"], build_agent(state)
env = gym.make(meta["args"]["env_id"], **meta["env_kwargs"])
stats = dict(episodes=0, success=0, picked_any=0, picked_wrong_first=0, faced_goal_object=0, drops=0)
rng = np.random.default_rng(1)
for e in range(100):
    goal = meta["train_goals"][e % len(meta["train_goals"])]
    obs, info = env.reset(seed=int(rng.integers(2 ** 31)), options={"goal": goal})
    u, first, faced = env.unwrapped, None, False
    gid = torch.tensor([meta["goals"].index(goal)])
    while True:
        with torch.no_grad():
            action = int(agent.get_action_and_value(agent.prepare(np.asarray(obs)[None]), gid)[0][0])
        front = u.grid.get(*u.front_pos)
        faced |= front is not None and f"{front.color} {front.type}" in goal
        before = u.carrying
        obs, _, terminated, truncated, info = env.step(action)
        if before is None and u.carrying is not None and first is None:
            first = f"{u.carrying.color} {u.carrying.type}"
        stats["drops"] += int(action == u.actions.drop and before is not None)
        if terminated or truncated:
            break
    stats["episodes"] += 1
    stats["success"] += int(bool(info.get("success")))
    stats["faced_goal_object"] += int(faced)
    stats["picked_any"] += int(first is not None)
    stats["picked_wrong_first"] += int(first is not None and first not in goal)
print(stats)
