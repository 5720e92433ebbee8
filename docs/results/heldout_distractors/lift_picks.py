"""What a trained Lift agent picks up, per split: the goal, an object sharing its colour or its type, another
object, or nothing (timeout); and how many rooms hold a held-out pair as a distractor.

    python docs/results/heldout_distractors/lift_picks.py RUN_DIR [EPISODES [OUT.json]]

Episodes in the environment's own rooms (held-out distractors allowed), the checkpoint's view, episode length
and attempts, actions sampled from the policy; ground truth only (no reward model in the loop)."""
import sys, collections, json
import numpy as np, torch, gymnasium as gym
import vlmreward  # registers envs
from vlmreward.rl.checkpoint import build_agent, load_checkpoint
from vlmreward.rl.ppo import Args
from vlmreward.rl.task import Task
from vlmreward.envs.household import HELDOUT_PAIRS, OBJECTS

torch.set_num_threads(1)
state = load_checkpoint(sys.argv[1]); args = Args(**state["meta"]["args"])
task = Task(args, torch.device("cpu"), fire_check=False); agent = build_agent(state)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
out = {}
for split, goals in (("train", task.train_goals), ("heldout", task.heldout_goals)):
    env = gym.make(args.env_id, **task.env_kwargs)
    rng = np.random.default_rng(0); torch.manual_seed(0)
    c = collections.Counter(); hd = collections.Counter()
    for e in range(n):
        goal = goals[e % len(goals)]
        obs, info = env.reset(seed=int(rng.integers(2**31)), options={"goal": goal})
        gc, gt = env.unwrapped._specs[goal][0]
        room = [(o.color, o.type) for o in env.unwrapped.grid.grid if o is not None and o.type in OBJECTS]
        hd["heldout_distractor_in_room"] += any(p in HELDOUT_PAIRS and p != (gc, gt) for p in room)
        done = False
        while not done:
            x = agent.prepare(torch.as_tensor(obs[None]))
            a = agent.get_action_and_value(x, torch.tensor([task.goal_id(goal)]))[0]
            obs, r, term, trunc, info = env.step(int(a[0])); done = term or trunc
        car = env.unwrapped.carrying
        if car is None: k = "nothing"
        else:
            p = (car.color, car.type)
            k = "goal" if p == (gc, gt) else "same colour" if p[0] == gc else "same type" if p[1] == gt else "other"
            if p != (gc, gt) and p in HELDOUT_PAIRS: hd["picked a heldout pair (wrong)"] += 1
        c[k] += 1
    out[split] = {"picked": dict(c), **hd}
    print(split, dict(c), dict(hd), flush=True)
if len(sys.argv) > 3:
    json.dump(out, open(sys.argv[3], "w"), indent=1)
