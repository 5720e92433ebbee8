"""The VLM reward on a VLM-trained PickPlace agent's terminal frames (its drops) against ground truth.

    python docs/results/pickplace_shaping/vlm_agent_drops.py RUN_DIR_OR_CHECKPOINT EPISODES
"""
import sys, collections, numpy as np, torch, gymnasium as gym
import vlmreward
from vlmreward.rl.checkpoint import build_agent, load_checkpoint
from vlmreward.rl.ppo import Args
from vlmreward.rl.task import Task
torch.set_num_threads(1)
state = load_checkpoint(sys.argv[1]); args = Args(**state["meta"]["args"])
task = Task(args, torch.device("cpu"), fire_check=False); agent = build_agent(state)
env = gym.make(args.env_id, render_mode="rgb_array", heldout_distractors=False, **task.env_kwargs)
rng = np.random.default_rng(0); torch.manual_seed(0)
frames, own, gt, kinds = [], [], [], collections.Counter()
for e in range(int(sys.argv[2])):
    goal = task.train_goals[int(rng.integers(len(task.train_goals)))]
    obs, info = env.reset(seed=int(rng.integers(2**31)), options={"goal": goal})
    need = env.unwrapped._specs[goal]
    done = False
    while not done:
        a = int(agent.get_action_and_value(agent.prepare(torch.as_tensor(obs[None])), torch.tensor([task.goal_id(goal)]))[0][0])
        obs, r, term, trunc, info = env.step(a); done = term or trunc
    if term:
        frames.append(env.render()); own.append(task.goal_id(goal)); gt.append(info["success"])
        # which relation holds for the goal's objects at the end
        lab = env.unwrapped.task_labels()
        pairs = [task.task_set[k] for k in np.flatnonzero(lab)]
        a_, b_ = [f"{c} {o}" for c, o in need]
        kinds["gt success" if info["success"] else
              "a goal object next to another object" if any((a_ in p or b_ in p) for p in pairs) else "no goal object adjacent"] += 1
frames = np.stack(frames); own = np.array(own); gt = np.array(gt)
p = np.concatenate([task.reward_model(frames[i:i+64]).probs.numpy() for i in range(0, len(frames), 64)])[np.arange(len(own)), own]
print(len(frames), "terminal frames;", dict(kinds))
for beta in (0.02, 0.03, 0.05, 0.1):
    f = p > beta
    print(f"beta {beta}: fires {f.sum()} (gt true {int((f & gt).sum())}), gt true total {gt.sum()}")

