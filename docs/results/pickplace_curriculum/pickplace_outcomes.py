"""How a trained PickPlace agent's episodes end, per split: success; a goal object (either, the relation is
symmetric) picked and dropped elsewhere, or still held at the timeout; a wrong object picked; nothing picked.

    python docs/results/pickplace_curriculum/pickplace_outcomes.py RUN_DIR [EPISODES [OUT.json]]

Episodes in the environment's own rooms, the checkpoint's view, episode length and attempts, actions sampled
from the policy; ground truth only (no reward model in the loop). Also the mean step of the first pickup."""
import sys, collections, json
import numpy as np, torch, gymnasium as gym
import vlmreward  # registers envs
from vlmreward.rl.checkpoint import build_agent, load_checkpoint
from vlmreward.rl.ppo import Args
from vlmreward.rl.task import Task
from vlmreward.envs.household import PICKUP

torch.set_num_threads(1)
state = load_checkpoint(sys.argv[1]); args = Args(**state["meta"]["args"])
task = Task(args, torch.device("cpu"), fire_check=False); agent = build_agent(state)
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
out = {}
for split, goals in (("train", task.train_goals), ("heldout", task.heldout_goals)):
    env = gym.make(args.env_id, **task.env_kwargs)
    rng = np.random.default_rng(0); torch.manual_seed(0)
    c, first_pick = collections.Counter(), []
    for e in range(n):
        goal = goals[e % len(goals)]
        obs, info = env.reset(seed=int(rng.integers(2**31)), options={"goal": goal})
        need = set(env.unwrapped._specs[goal])
        picked, done, t = None, False, 0
        while not done:
            x = agent.prepare(torch.as_tensor(obs[None]))
            a = int(agent.get_action_and_value(x, torch.tensor([task.goal_id(goal)]))[0][0])
            obs, r, term, trunc, info = env.step(a); done = term or trunc; t += 1
            car = env.unwrapped.carrying
            if picked is None and a == PICKUP and car is not None:
                picked = (car.color, car.type); first_pick.append(t)
        if info["success"]: k = "success"
        elif picked is None: k = "nothing picked"
        elif picked not in need: k = "wrong object picked"
        elif env.unwrapped.carrying is not None: k = "goal object held at timeout"
        else: k = "goal object dropped elsewhere"
        c[k] += 1
    out[split] = {"outcomes": dict(c), "mean_first_pickup_step": float(np.mean(first_pick)) if first_pick else None}
    print(split, out[split], flush=True)
if len(sys.argv) > 3:
    json.dump(out, open(sys.argv[3], "w"), indent=1)
