"""Precision of the default model's PickPlace reward on the frames after drops (episode ends with max_attempts 1).

    python docs/results/pickplace_shaping/drop_precision.py EPSILON EPISODES   # EPSILON: share of random actions
"""
import numpy as np, torch, gymnasium as gym, sys
import vlmreward
from vlmreward.rl import ppo
from vlmreward.rl.task import Task
from vlmreward.envs import expert_action
torch.set_num_threads(1)
args = ppo.Args(env_id="vlmreward/PickPlace-v0", view="egocentric", frame_source="render", max_attempts=1, threshold=0.02)
task = Task(args, torch.device("cpu"), fire_check=False)
env = gym.make("vlmreward/PickPlace-v0", render_mode="rgb_array", max_attempts=1, view="egocentric", max_episode_steps=60)
rng = np.random.default_rng(0)
frames, labels, own = [], [], []
eps = float(sys.argv[1]) if len(sys.argv) > 1 else 0.3
for e in range(int(sys.argv[2]) if len(sys.argv) > 2 else 300):
    obs, info = env.reset(seed=e)
    while True:
        a = expert_action(env) if rng.random() > eps else int(rng.integers(5))
        obs, r, term, trunc, info = env.step(a)
        if term or trunc:
            break
    if term:
        frames.append(env.render()); labels.append(env.unwrapped.task_labels()); own.append(task.goal_id(info["goal"]))
frames, labels, own = np.stack(frames), np.stack(labels), np.array(own)
p = np.concatenate([task.reward_model(frames[i:i+64]).probs.numpy() for i in range(0, len(frames), 64)])
train_ids = np.array([task.goal_id(g) for g in task.train_goals])
rows = np.arange(len(own))
print(f"{len(frames)} drop frames, own goal true on {labels[rows, own].mean():.2f}; any training goal true on {labels[:, train_ids].any(1).mean():.2f}")
for beta in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4):
    fire = p[rows, own] > beta; y = labels[rows, own]
    prec = (fire & y).sum() / max(fire.sum(), 1); rec = (fire & y).sum() / max(y.sum(), 1)
    fa = p[:, train_ids] > beta; ya = labels[:, train_ids]
    rprec = (fa & ya).sum() / max(fa.sum(), 1); rrec = (fa & ya).sum() / max(ya.sum(), 1)
    print(f"beta {beta:.2f}: own goal precision {prec:.2f} recall {rec:.2f} | relabels per frame {fa.sum(1).mean():.2f} precision {rprec:.2f} recall {rrec:.2f}")
