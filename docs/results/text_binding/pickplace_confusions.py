"""Where a reward model's PickPlace held-out goals go wrong (docs/results/default_model.md, "Binding").

On the test frames of `vlmreward evaluate` (its --data-dir cache), every PickPlace goal is scored against the
whole task set (2,256 goals). Two counts:
1. for each held-out (frame, goal) positive: does the goal with the largest p hold on the frame, is it the
   colour-swapped goal (the binding swap), does it share one object with the goal, or none of these;
2. held-out (frame, goal) negatives whose p exceeds the median p of the held-out positives: what holds on
   those frames (the binding swap of the goal, a goal sharing one of its objects, other goals, nothing).

    python docs/results/text_binding/pickplace_confusions.py default runs/evaluate_data/test-*.npz
"""
import sys

import numpy as np
import torch

import vlmreward
from vlmreward import load_model
from vlmreward.envs.household import HELDOUT_PAIRS
from vlmreward.pretrain.dataset import FrameDataset


def objects(goal: str):
    w = goal.split()
    return (w[2], w[3]), (w[7], w[8])


def main(model_name: str, data: str) -> None:
    ds = FrameDataset.load(data)
    e = ds.env_ids.index("vlmreward/PickPlace-v0")
    cols = ds.env_goals[e]
    goals = [ds.goals[c] for c in cols]
    rows = np.where(ds.env_index == e)[0]
    model = load_model(model_name)
    text = torch.nn.functional.normalize(model.encode_text(goals).float(), dim=-1)
    pixels = vlmreward.preprocess(torch.from_numpy(ds.frames[rows]), **model.preprocess_kwargs)
    with torch.no_grad():
        image = torch.cat([model.encode_image(pixels[i:i + 256]) for i in range(0, len(pixels), 256)])
    logits = model.logit_scale * torch.nn.functional.normalize(image.float(), dim=-1) @ text.T
    p = logits.softmax(-1).numpy()
    labels = ds.labels[np.ix_(rows, cols)]
    held = np.array([bool(HELDOUT_PAIRS.intersection(objects(g))) for g in goals])
    hidx = np.where(held)[0]

    top = {}
    for i, j in zip(*np.where(labels[:, held])):
        (c1, o1), (c2, o2) = objects(goals[hidx[j]])
        best = int(p[i].argmax())
        pair = set(objects(goals[best]))
        key = ("top goal holds" if labels[i, best] else "binding swap" if pair == {(c2, o1), (c1, o2)}
               else "one object shared" if len(pair & {(c1, o1), (c2, o2)}) == 1 else "other")
        top[key] = top.get(key, 0) + 1

    hp, hl = p[:, held], labels[:, held]
    threshold = np.median(hp[hl])
    false = {}
    for i, j in zip(*np.where((hp > threshold) & ~hl)):
        (c1, o1), (c2, o2) = objects(goals[hidx[j]])
        true = [set(objects(goals[t])) for t in np.where(labels[i])[0]]
        key = ("binding swap holds" if any(s == {(c2, o1), (c1, o2)} for s in true)
               else "a goal sharing one object holds" if any(len(s & {(c1, o1), (c2, o2)}) == 1 for s in true)
               else "other goals hold" if true else "no goal holds")
        false[key] = false.get(key, 0) + 1
    for title, counts in (("held-out positives, goal with the largest p", top),
                          (f"held-out negatives above the median positive p ({int((hp[hl] > threshold).sum())} "
                           "positives above it)", false)):
        n = sum(counts.values())
        print(f"{model_name}: {title}: {n}")
        for k, v in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"  {k}: {v} ({v / n:.2f})")


if __name__ == "__main__":
    main(*sys.argv[1:3])
