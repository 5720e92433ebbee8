"""How a trained household agent's episodes end, per split (training / held-out goals).

    python docs/results/episode_outcomes.py RUN_DIR [EPISODES [OUT.json]]

Lift: what is carried at the end: the goal, an object sharing its colour or its type, another, or nothing
(timeout); also how many rooms hold a held-out pair as a distractor. PickPlace: success; a goal object (either:
the relation is symmetric) dropped elsewhere or still held at the end; a wrong object picked; nothing picked;
also the mean step of the first pickup. Episodes in the environment's own rooms, the checkpoint's view, episode
length and attempts, actions sampled from the policy; ground truth only (no reward model in the loop).
Outputs of it: heldout_distractors/lift_picks_*.json, pickplace_curriculum/outcomes_*.json."""
import sys, collections, json
import numpy as np, torch, gymnasium as gym
import vlmreward  # registers envs
from vlmreward.rl.checkpoint import build_agent, load_checkpoint
from vlmreward.rl.ppo import Args
from vlmreward.rl.task import Task
from vlmreward.envs.household import HELDOUT_PAIRS, OBJECTS, PICKUP


def lift_end(env, need):
    car = env.unwrapped.carrying
    if car is None:
        return "nothing"
    p, (gc, gt) = (car.color, car.type), need[0]
    return "goal" if p == (gc, gt) else "same colour" if p[0] == gc else "same type" if p[1] == gt else "other"


def pickplace_end(env, need, first_pick, success):
    if success:
        return "success"
    if first_pick is None:
        return "nothing picked"
    if first_pick not in need:
        return "wrong object picked"
    return "goal object held at the end" if env.unwrapped.carrying is not None else "goal object dropped elsewhere"


torch.set_num_threads(1)
state = load_checkpoint(sys.argv[1]); args = Args(**state["meta"]["args"])
task = Task(args, torch.device("cpu"), fire_check=False); agent = build_agent(state)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
out = {}
for split, goals in (("train", task.train_goals), ("heldout", task.heldout_goals)):
    env = gym.make(args.env_id, **task.env_kwargs)
    family = env.unwrapped.family
    rng = np.random.default_rng(0); torch.manual_seed(0)
    ends, extra, first_steps = collections.Counter(), collections.Counter(), []
    for e in range(n):
        goal = goals[e % len(goals)]
        obs, info = env.reset(seed=int(rng.integers(2**31)), options={"goal": goal})
        need = list(env.unwrapped._specs[goal])
        room = [(o.color, o.type) for o in env.unwrapped.grid.grid if o is not None and o.type in OBJECTS]
        extra["heldout_distractor_in_room"] += any(p in HELDOUT_PAIRS and p not in need for p in room)
        first_pick, done, t = None, False, 0
        while not done:
            x = agent.prepare(torch.as_tensor(obs[None]))
            a = int(agent.get_action_and_value(x, torch.tensor([task.goal_id(goal)]))[0][0])
            obs, r, term, trunc, info = env.step(a); done = term or trunc; t += 1
            car = env.unwrapped.carrying
            if first_pick is None and a == PICKUP and car is not None:
                first_pick = (car.color, car.type); first_steps.append(t)
        if family == "lift":
            ends[lift_end(env, need)] += 1
            car = env.unwrapped.carrying
            extra["picked a heldout pair (wrong)"] += car is not None and (car.color, car.type) in HELDOUT_PAIRS \
                and (car.color, car.type) != need[0]
        else:
            ends[pickplace_end(env, need, first_pick, info["success"])] += 1
    out[split] = {"ends": dict(ends), **extra,
                  "mean_first_pickup_step": float(np.mean(first_steps)) if first_steps else None}
    print(split, out[split], flush=True)
if len(sys.argv) > 3:
    json.dump(out, open(sys.argv[3], "w"), indent=1)
