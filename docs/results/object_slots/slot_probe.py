"""PickPlace rewards from object slots matched per cell: a probe (docs/results/default_model.md, "Object slots").

A reward head trained on the PickPlace frames of the pretraining cache only, scored like the reward (softmax over
the whole task set, 2,256 goals; pooled AP over training / held-out goals on the validation frames):
- cells: a small CNN embeds each 12 x 12 cell of the 84-px room frame on its own (no context), L2-normalised, D = 64
  (``--cells trunk``: a linear map of v6's ConvMixer trunk features, one per cell with its neighbours' context,
  the trunk fine-tuned at a sixth of the head's learning rate);
- objects: each of the caption's two objects gets an embedding v1, v2 from the text (``--text``):
  ``factored`` = W(LN(h_noun)) + W(LN(h_colour)), h = frozen MiniLM token states of the object's noun and of the
  colour word before it (the tower of the default model; a noun's state holds its own adjective, text_binding/);
  ``token`` = MLP(h_noun); ``symbolic`` = MLP(e_colour + e_type) from the parsed words (no language model);
- score(frame, goal) = tau * logsumexp over ordered 4-adjacent cell pairs (i, j) of (a_i + b_j) / tau with
  a = cos(cell, v1), b = cos(cell, v2) (``--score lse``), or the mean over them of a_i * b_j with non-negative
  (softplus) embeddings (``--score bilinear``: <mean_E u_i u_j^T, v1 v2^T>, a dot product of a (D*D) image
  embedding and a (D*D) text embedding, the form the reward kernels score);
- loss: 10 x BCE over all (frame, caption) pairs + multi-positive softmax CE over the training goals (and over the
  partial captions), 1 epoch one-cycle AdamW 2e-3, batch 128.
``--partial``: the partial captions of v6's recipe (one object named by colour only or type only, ``object`` as its
noun; labels the OR of the goals it covers, held-out goals included; none names a held-out pair in full).
``--eval-wordings``: score the saved head with every evaluation-only wording of the grammar instead of training.

    python docs/results/object_slots/slot_probe.py --text factored --partial \
        --train runs/data/train-6f7aeabc2dc9.npz --val runs/data/val-59527e452d25.npz
(the caches ``vlmreward pretrain --data-dir runs/data`` writes for the default recipe)
"""
import argparse
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from vlmreward import load_model
from vlmreward.envs.household import COLOURS, OBJECTS
from vlmreward.pretrain.captions import attribute_captions
from vlmreward.pretrain.dataset import FrameDataset

p = argparse.ArgumentParser()
p.add_argument("--train", required=True); p.add_argument("--val", required=True)
p.add_argument("--text", choices=("factored", "token", "symbolic"), default="factored")
p.add_argument("--score", choices=("lse", "bilinear"), default="lse")
p.add_argument("--cells", choices=("cnn", "trunk"), default="cnn",
               help="cnn: a small CNN over each cell alone; trunk: v6's ConvMixer trunk (fine-tuned, lr / 6) + linear")
p.add_argument("--partial", action="store_true"); p.add_argument("--epochs", type=int, default=1)
p.add_argument("--seed", type=int, default=0); p.add_argument("--threads", type=int, default=2)
p.add_argument("--checkpoint", default=None, help="where the head is saved (default: next to --train)")
p.add_argument("--eval-wordings", action="store_true")
args = p.parse_args()
torch.set_num_threads(args.threads); torch.manual_seed(args.seed); np.random.seed(args.seed)
ckpt = args.checkpoint or (f"{args.train}.slots-{args.cells}-{args.text}-{args.score}-"
                           f"{'partial' if args.partial else 'full'}-s{args.seed}.pt")


def load(path):
    ds = FrameDataset.load(path)
    e = ds.env_ids.index("vlmreward/PickPlace-v0"); cols = np.asarray(ds.env_goals[e]); rows = ds.env_index == e
    return ds.frames[rows], ds.labels[rows][:, cols], [ds.goals[c] for c in cols], ds.train_goal_mask[cols]


Xva, Yva, goals, is_train = load(args.val)
G = len(goals)
# captions: the goals, then the partial ones (v6's: pretrain.captions.attribute_captions, held-out goals covered);
# slots (colour index or 8 = any, type index or 6 = any) x 2 objects
partial = attribute_captions(goals) if args.partial else {}
P = len(partial)
captions = goals + list(partial)
cover = torch.zeros(G, P)  # goal g makes partial caption p true
index = {g: i for i, g in enumerate(goals)}
for i, covered in enumerate(partial.values()):
    cover[[index[g] for g in covered], i] = 1


def slot(phrase):
    *colour, kind = phrase.split()
    return (COLOURS.index(colour[0]) if colour else 8, OBJECTS.index(kind) if kind != "object" else 6)


allslots = torch.tensor([[slot(o) for o in re.fullmatch(r"put the (.+) next to the (.+)", c).groups()]
                         for c in captions])  # (G+P, 2, 2)
print(f"PickPlace frames: val {len(Xva)}; goals {G} ({int(is_train.sum())} training), "
      f"partial captions {P}", flush=True)

vlm = load_model("default"); text = vlm.model.text; tokenizer = vlm.tokenizer
noun_ids = {tokenizer([w])[0][1].item() for w in OBJECTS + ("object",)}
colour_ids = {tokenizer([w])[0][1].item() for w in COLOURS}


def text_slots(captions):
    """Frozen MiniLM token states of each object's noun and of the colour word before it (zeros, has = 0, if none)."""
    tok = tokenizer(captions)
    with torch.no_grad():
        text.transformer.eval()
        states = torch.cat([text.transformer(input_ids=t, attention_mask=(t != text.config.pad_token_id).long())
                            .last_hidden_state for t in tok.split(256)])
    noun, colour, has = torch.zeros(len(captions), 2, 384), torch.zeros(len(captions), 2, 384), torch.zeros(len(captions), 2, 1)
    for g, ids in enumerate(tok.tolist()):
        at = [k for k, v in enumerate(ids) if v in noun_ids]
        if len(at) != 2:
            raise ValueError(f"expected two object nouns in {captions[g]!r}")
        for s, k in enumerate(at):
            noun[g, s] = states[g, k]
            if ids[k - 1] in colour_ids:
                colour[g, s], has[g, s] = states[g, k - 1], 1
    return noun, colour, has


noun, colour, has_colour = text_slots(captions)
D, TAU = 64, 0.1
nonneg = F.softplus if args.score == "bilinear" else (lambda x: x)


class SlotHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(32, 64, 3, stride=2, padding=1),
                                  nn.GELU(), nn.Flatten(), nn.Linear(64 * 9, 128), nn.GELU(), nn.Linear(128, D))
        self.txt = nn.Sequential(nn.LayerNorm(384), nn.Linear(384, 256), nn.GELU(), nn.Linear(256, D))
        self.lin = nn.Sequential(nn.LayerNorm(384), nn.Linear(384, D))
        self.sym_c, self.sym_o = nn.Embedding(9, 128), nn.Embedding(7, 128)
        self.sym = nn.Sequential(nn.GELU(), nn.Linear(128, D))
        self.scale, self.bias = nn.Parameter(torch.tensor(2.3)), nn.Parameter(torch.tensor(-5.0))
        if args.cells == "trunk":  # v6's image trunk: its 7 x 7 x 256 features (one per cell, with context) before pooling
            self.trunk, self.proj = vlm.model.visual.trunk, nn.Linear(256, D)
            self.mean, self.std = (torch.tensor(vlm.preprocess_kwargs[k]).view(1, 3, 1, 1) for k in ("mean", "std"))

    def cells(self, x):  # uint8 (B, 84, 84, 3) -> (B, 49, D), one embedding per 12-px cell
        if args.cells == "trunk":
            x = (torch.as_tensor(x).float().div(255).permute(0, 3, 1, 2) - self.mean) / self.std
            f = self.trunk.forward_features(x).flatten(2).transpose(1, 2)  # (B, 49, 256)
            return F.normalize(nonneg(self.proj(f)), dim=-1)
        x = torch.as_tensor(x).float().div(127.5).sub(1).permute(0, 3, 1, 2); B = x.shape[0]
        c = x.reshape(B, 3, 7, 12, 7, 12).permute(0, 2, 4, 1, 3, 5).reshape(B * 49, 3, 12, 12)
        return F.normalize(nonneg(self.cell(c).reshape(B, 49, D)), dim=-1)

    def objects(self, rows):  # (R, 2, D)
        if args.text == "symbolic":
            sl = allslots[rows]; v = self.sym(self.sym_c(sl[..., 0]) + self.sym_o(sl[..., 1]))
        elif args.text == "factored":
            v = self.lin(noun[rows]) + has_colour[rows] * self.lin(colour[rows])
        else:
            v = self.txt(noun[rows])
        return F.normalize(nonneg(v), dim=-1)

    def score(self, x, rows):  # (B, R)
        u, v = self.cells(x), self.objects(rows)
        a = torch.einsum("bcd,gd->bcg", u, v[:, 0]); b = torch.einsum("bcd,gd->bcg", u, v[:, 1])
        B, R = a.shape[0], a.shape[2]
        if args.score == "bilinear":  # mean over the 168 ordered adjacent pairs (i, j) of a_i * b_j
            g = F.pad(a.reshape(B, 7, 7, R), (0, 0, 1, 1, 1, 1))
            nb = g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:]
            return (nb.reshape(B, 49, R) * b).sum(1) / 168
        g = F.pad(a.reshape(B, 7, 7, R) / TAU, (0, 0, 1, 1, 1, 1), value=-1e4)
        nb = torch.logsumexp(torch.stack([g[:, :-2, 1:-1], g[:, 2:, 1:-1], g[:, 1:-1, :-2], g[:, 1:-1, 2:]]), 0)
        return TAU * torch.logsumexp(nb.reshape(B, 49, R) + b / TAU, dim=1)


m = SlotHead()


def evaluate(X, Y):
    m.eval()
    with torch.no_grad():
        s = torch.cat([m.score(X[i:i + 256], torch.arange(G)) for i in range(0, len(X), 256)])
        prob = torch.softmax(m.scale.exp() * s, dim=1).numpy()
    m.train()
    return {k: round(float(average_precision_score(Y[:, msk].ravel(), prob[:, msk].ravel())), 3)
            for k, msk in (("train", is_train), ("heldout", ~is_train))}


if args.eval_wordings:
    from vlmreward.envs.language import num_wordings, reword
    m.load_state_dict(torch.load(ckpt, weights_only=True))
    print("own wording", repr(goals[0]), evaluate(Xva, Yva), flush=True)
    for k in range(num_wordings(goals[0], "eval")):
        noun, colour, has_colour = text_slots([reword(g, k) for g in goals])
        print(f"eval wording {k}", repr(reword(goals[0], k)), evaluate(Xva, Yva), flush=True)
    sys.exit()

Xtr, Ytr, goals_tr, _ = load(args.train)
assert goals_tr == goals
print(f"PickPlace training frames: {len(Xtr)}", flush=True)
trunk = [q for n, q in m.named_parameters() if n.startswith("trunk.")]
rest = [q for n, q in m.named_parameters() if not n.startswith("trunk.")]
opt = torch.optim.AdamW([{"params": rest}] + ([{"params": trunk}] if trunk else []), lr=2e-3, weight_decay=0.01)
steps = args.epochs * (len(Xtr) // 128)
sched = torch.optim.lr_scheduler.OneCycleLR(opt, [2e-3, 2e-3 / 6][:len(opt.param_groups)], total_steps=steps, pct_start=0.1)
train_rows = torch.cat([torch.nonzero(torch.from_numpy(is_train))[:, 0], torch.arange(G, G + P)])
n_goals = int(is_train.sum())
t0, step = time.time(), 0
for epoch in range(args.epochs):
    perm = np.random.permutation(len(Xtr))
    for i in range(0, len(perm) - 127, 128):
        idx = np.sort(perm[i:i + 128]); yf = torch.from_numpy(Ytr[idx]).float()
        y = torch.cat([yf[:, is_train], (yf @ cover > 0).float()], 1)
        logits = m.scale.exp() * m.score(Xtr[idx], train_rows)
        bce = F.binary_cross_entropy_with_logits(logits + m.bias, y)
        ce = 0
        for lo, yy in ((logits[:, :n_goals], y[:, :n_goals]), (logits[:, n_goals:], y[:, n_goals:])):
            pos = yy.sum(1) > 0
            if pos.any():
                ce = ce - (torch.log_softmax(lo, 1) * yy).sum(1)[pos].div(yy.sum(1)[pos]).mean()
        loss = bce * 10 + ce
        opt.zero_grad(); loss.backward(); opt.step(); sched.step(); step += 1
        if step % 50 == 0:
            print(f"step {step}/{steps} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    print(f"epoch {epoch + 1} validation AP {evaluate(Xva, Yva)} {time.time() - t0:.0f}s", flush=True)
torch.save(m.state_dict(), ckpt)
