"""Where the PickPlace reward fires on partly scripted play: frames by what the agent does (results/default_model.md).

60 PickPlace episodes (seeds 10,000..), 120 steps each: the expert's action with probability .6, else a random
turn / forward; a drop while carrying is replaced by a random move 80% of the time, so the agent carries objects
around. Each frame is scored for the episode's goal (p against the whole task set, the reward agents train on) and
put in one group: carrying one goal object on a cell next to the other ("carry_adj": ground truth False, the
carried object is drawn on the agent's cell), carrying elsewhere, nothing carried and the goal False / True.

    python docs/results/relation_head/carry_fires.py [model] [beta]
"""
import sys

import gymnasium as gym
import numpy as np
import torch

from vlmreward import GoalBank, RewardModel, load_model
from vlmreward.envs import task_sets
from vlmreward.envs.expert import expert_action
from vlmreward.envs.household import DROP
torch.set_num_threads(1)
MODEL, BETA = (sys.argv[1] if len(sys.argv) > 1 else "default"), float(sys.argv[2]) if len(sys.argv) > 2 else 0.039
vlm = load_model(MODEL)
goals = task_sets(["vlmreward/PickPlace-v0"])
rm = RewardModel(vlm, GoalBank(vlm, goals), mode="probability")
env = gym.make("vlmreward/PickPlace-v0", render_mode="rgb_array", max_episode_steps=200)
rng = np.random.default_rng(0)
rec = {"carry_adj": [], "carry_far": [], "floor_false": [], "floor_true": []}
for ep in range(60):
    env.reset(seed=10_000 + ep)
    u = env.unwrapped
    g = u.goal; gid = goals.index(g)
    frames, kinds = [], []
    for t in range(120):
        a = expert_action(u) if rng.random() < 0.6 else int(rng.integers(0, 3))
        if u.carrying is not None and a == DROP and rng.random() < 0.8:
            a = int(rng.integers(0, 3))  # keep carrying most of the time
        _, _, term, trunc, _ = env.step(a)
        f = env.render(); gt = u.goal_success(g)
        if u.carrying is not None:
            # is the agent's cell 4-adjacent to any object on the floor named by the goal?
            ax, ay = int(u.agent_pos[0]), int(u.agent_pos[1])
            adj = False
            for dx, dy in ((1,0),(-1,0),(0,1),(0,-1)):
                o = u.grid.get(ax+dx, ay+dy)
                if o is not None and getattr(o, "type", "") != "wall" and f"{o.color} {o.type}" in g and f"{u.carrying.color} {u.carrying.type}" in g:
                    adj = True
            kinds.append("carry_adj" if adj else "carry_far")
        else:
            kinds.append("floor_true" if gt else "floor_false")
        frames.append(f)
        if term or trunc:
            break
    p = rm(np.stack(frames), np.full(len(frames), gid)).probs.numpy()
    for k, v in zip(kinds, p):
        rec[k].append(v)
for k, v in rec.items():
    v = np.array(v)
    print(f"{k}: {len(v)} frames, fires at beta {BETA}: {(v > BETA).mean():.3f}, median p {np.median(v):.4f}")
