"""Precision and recall of the default model's PickPlace sub-goal reward (Lift goals of the goal's objects, Find's goals as
negatives) on PickPlace frames of expert / partly random play, against the simulator's carried object.

    python docs/results/pickplace_shaping/subgoal_precision.py
"""
import numpy as np, torch, gymnasium as gym
import vlmreward
from vlmreward.envs import expert_action
from vlmreward.envs.household import goal_specs
from vlmreward.goals import GoalBank
from vlmreward.reward import RewardModel
torch.set_num_threads(1)
model = vlmreward.load_model("default")
lift, find = list(goal_specs("lift")), list(goal_specs("find"))
rm = RewardModel(model, GoalBank(model, lift, negatives=lift + find), threshold=0.3, fire_check_frames=0)
env = gym.make("vlmreward/PickPlace-v0", render_mode="rgb_array", max_attempts=1, view="egocentric", max_episode_steps=40)
rng = np.random.default_rng(0)
frames, sub_ids, truth, carrying = [], [], [], []
for e in range(150):
    env.reset(seed=e); b = env.unwrapped
    eps = [0.2, 0.6, 1.0][e % 3]
    while True:
        a = expert_action(env) if rng.random() > eps else int(rng.integers(5))
        _, _, term, trunc, _ = env.step(a)
        frames.append(env.render()); sub_ids.append([rm.bank.index(g) for g in b.subgoals()])
        truth.append(b.subgoal_success()); carrying.append(b.carrying is not None)
        if term or trunc: break
frames = np.stack(frames); truth = np.array(truth); carrying = np.array(carrying)
p = np.concatenate([rm(frames[i:i+128]).probs.numpy() for i in range(0, len(frames), 128)])
ps = np.array([p[k, ids].max() for k, ids in enumerate(sub_ids)])
print(len(frames), "frames; subgoal true", truth.mean(), "carrying", carrying.mean())
for beta in (0.05, 0.1, 0.2, 0.3, 0.5):
    f = ps > beta
    print(f"beta {beta}: precision {(f&truth).sum()/max(f.sum(),1):.3f} recall {(f&truth).sum()/max(truth.sum(),1):.3f}  fires on carrying-other {(f & carrying & ~truth).sum()}/{(carrying&~truth).sum()}")
