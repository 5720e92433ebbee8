"""Reward rules over the default model's PickPlace probabilities on drop frames: p against the whole task set
(the trainer's reward) vs p of the goal's pair (both orders) within its confusable goals (those sharing an object
with it), vs "the pair is the top one among its confusable goals". Drop frames: scripted play with 30% / 80%
random actions (max_attempts 1, first drop ends the episode) and a VLM-trained agent's drops.

    python docs/results/pickplace_shaping/confusable_rules.py EPISODES AGENT_CHECKPOINT [CACHE.npz]
"""
import sys, numpy as np, torch, gymnasium as gym, os
import vlmreward
from vlmreward.rl import ppo
from vlmreward.rl.task import Task
from vlmreward.envs import expert_action
from vlmreward.envs.household import PAIRS, goal_specs
from vlmreward.rl.checkpoint import build_agent, load_checkpoint
torch.set_num_threads(int(os.environ.get("T", "1")))
args = ppo.Args(env_id="vlmreward/PickPlace-v0", view="egocentric", frame_source="render", max_attempts=1, threshold=0.02)
task = Task(args, torch.device("cpu"), fire_check=False)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
def scripted(eps):
    env = gym.make("vlmreward/PickPlace-v0", render_mode="rgb_array", max_attempts=1, view="egocentric", max_episode_steps=60)
    rng = np.random.default_rng(0); F, L, O = [], [], []
    for e in range(N):
        obs, info = env.reset(seed=e)
        while True:
            a = expert_action(env) if rng.random() > eps else int(rng.integers(5))
            obs, r, term, trunc, info = env.step(a)
            if term or trunc: break
        if term:
            F.append(env.render()); L.append(env.unwrapped.task_labels()); O.append(task.goal_id(info["goal"]))
    return np.stack(F), np.stack(L), np.array(O)
def agent(ck):
    state = load_checkpoint(ck); a_args = ppo.Args(**state["meta"]["args"]); ag = build_agent(state)
    t2 = Task(a_args, torch.device("cpu"), fire_check=False)
    env = gym.make(a_args.env_id, render_mode="rgb_array", heldout_distractors=False, **t2.env_kwargs)
    rng = np.random.default_rng(0); torch.manual_seed(0); F, L, O = [], [], []
    for e in range(N):
        goal = t2.train_goals[int(rng.integers(len(t2.train_goals)))]
        obs, info = env.reset(seed=int(rng.integers(2**31)), options={"goal": goal}); done = False
        while not done:
            act = int(ag.get_action_and_value(ag.prepare(torch.as_tensor(obs[None])), torch.tensor([t2.goal_id(goal)]))[0][0])
            obs, r, term, trunc, info = env.step(act); done = term or trunc
        if term:
            F.append(env.render()); L.append(env.unwrapped.task_labels()); O.append(task.goal_id(goal))
    return np.stack(F), np.stack(L), np.array(O)
cache = sys.argv[3] if len(sys.argv) > 3 else "drops.npz"
if os.path.exists(cache):
    d = dict(np.load(cache)); sets = {k: (d[k+"_F"], d[k+"_L"], d[k+"_O"]) for k in ("s03", "s08", "hack")}
else:
    sets = {"s03": scripted(0.3), "s08": scripted(0.8), "hack": agent(sys.argv[2])}
    np.savez_compressed(cache, **{f"{k}_{n}": v for k, s in sets.items() for n, v in zip("FLO", s)})

sp = goal_specs("pickplace"); ts = task.task_set
assert list(sp) == list(ts)
index = {tuple(sp[g]): i for i, g in enumerate(ts)}
mirror = np.array([index[tuple(reversed(sp[g]))] for g in ts])
ids = np.array([[PAIRS.index(o) for o in sp[g]] for g in ts])  # (G, 2) the goal's two objects
conf = (ids[:, None, :, None] == ids[None, :, None, :]).any((2, 3))  # (G, G): the goals share an object
for name, (F, L, O) in sets.items():
    with torch.no_grad():
        P = np.concatenate([task.reward_model(F[i:i+64]).probs.numpy() for i in range(0, len(F), 64)])
    rows = np.arange(len(O)); y = L[rows, O]
    full = P[rows, O]
    pair = P[rows, O] + P[rows, mirror[O]]
    restricted = np.array([pair[i] / P[i, conf[O[i]]].sum() for i in range(len(O))])
    am = np.array([P[i, conf[O[i]]].max() <= max(P[i, O[i]], P[i, mirror[O[i]]]) for i in range(len(O))])
    print(f"== {name}: {len(O)} drops, own goal true {y.sum()}")
    for lab, s, bs in (("full p", full, (0.01, 0.02, 0.05)), ("confusable p(pair)", restricted, (0.3, 0.5, 0.7, 0.9))):
        for b in bs:
            f = s > b
            print(f"  {lab} > {b}: fires {f.sum()} TP {(f&y).sum()} FP {(f&~y).sum()} recall {(f&y).sum()/max(y.sum(),1):.2f}")
    print(f"  argmax among confusables: fires {am.sum()} TP {(am&y).sum()} FP {(am&~y).sum()} recall {(am&y).sum()/max(y.sum(),1):.2f}")
