"""v6's PickPlace AP on the frames slot_probe.py scores (docs/results/default_model.md, "Object slots"): every
PickPlace goal against the whole task set (vlmreward.evaluation.reward_probs), pooled AP over training / held-out
goals on the PickPlace frames of one cache.

    python docs/results/object_slots/v6_reference.py runs/data/val-59527e452d25.npz
"""
import sys

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from vlmreward import load_model
from vlmreward.evaluation import reward_probs
from vlmreward.pretrain.dataset import FrameDataset

torch.set_num_threads(2)
ds = FrameDataset.load(sys.argv[1])
e = ds.env_ids.index("vlmreward/PickPlace-v0"); cols = np.asarray(ds.env_goals[e]); rows = ds.env_index == e
frames, labels, goals = ds.frames[rows], ds.labels[rows][:, cols], [ds.goals[c] for c in cols]
train = ds.train_goal_mask[cols]
probs = reward_probs(load_model("default"), frames, goals, negatives=goals, num_negatives=len(goals) - 1)
print(f"{len(frames)} PickPlace frames", {k: round(float(average_precision_score(labels[:, m].ravel(), probs[:, m].ravel())), 3)
                                          for k, m in (("train", train), ("heldout", ~train))})
