"""Training the object-relation head (:mod:`vlmreward.relation`) on the frames of the two-object goals.

Data: the frames of every environment whose task set holds goals that name two objects (PickPlace), labelled for
its training goals and for the partial goals of :func:`~vlmreward.pretrain.captions.attribute_captions` (one
object named by colour only or by type only; held-out pairs never named in full), each caption in its training
wordings (one drawn per caption and step). The text tower stays frozen: its token states are computed once.
Loss: ``10 x`` binary cross-entropy over every (frame, caption) pair (with a learnt bias) + a multi-positive
softmax cross-entropy over the training goals and, apart, over the partial goals. One-cycle AdamW.
Measured as a probe first: docs/results/default_model.md, "Object slots matched per cell".
"""
from __future__ import annotations

import re
import time

import numpy as np
import torch
import torch.nn.functional as F

from vlmreward.ops import preprocess
from vlmreward.pretrain.captions import attribute_captions, training_captions
from vlmreward.relation import RelationHead, find_objects, object_token_states

#: the noun of a partial goal that names its object by colour only ("the red object")
ANY_OBJECT = "object"


def household_vocabulary() -> tuple[list[str], list[str]]:
    """(nouns, attributes) of the household domain: the object types plus "object", and the colours."""
    from vlmreward.envs.household import COLOURS, OBJECTS
    return [*OBJECTS, ANY_OBJECT], list(COLOURS)


def relation_columns(goals, nouns, attributes) -> np.ndarray:
    """int64 indices of the goals that name exactly two objects (words split at non-letters; the text tower's
    tokenizer checks them again when it embeds them)."""
    return np.array([c for c, g in enumerate(goals)
                     if len(find_objects(re.findall(r"[a-z]+", g.lower()), nouns, attributes)) == 2], dtype=np.int64)


def train_relation_head(model, model_name: str, train_ds, *, seed: int = 0, epochs: int = 1, batch_size: int = 128,
                        lr: float = 2e-3, bce_weight: float = 10.0, hard_negatives: int = 0,
                        vocabulary: tuple[list[str], list[str]] | None = None, log=print) -> RelationHead | None:
    """Train a relation head for ``model`` (an open_clip module of the registered architecture ``model_name``
    with a Hugging Face text tower, e.g. the default architecture) on ``train_ds``
    (:class:`~vlmreward.pretrain.dataset.FrameDataset`).

    ``vocabulary``: (nouns, attributes) that find a caption's objects (default :func:`household_vocabulary`).
    ``hard_negatives``: per frame, the BCE is also taken over this many of its highest-scoring training goals that
    do not hold (weight ``bce_weight``; 0: off), e.g. the goal pair of a carried object and the object beside the
    agent, which the average over all goals barely weighs.

    The run is seeded by ``seed`` alone (independent of anything trained before it). Returns the head in eval
    mode, or None when no goal of the dataset names two objects. ``log`` receives one line per 100 steps.
    Raises ValueError for a model whose text tower is not a Hugging Face one or whose input size is not a
    multiple of the room grid (7).
    """
    from open_clip.hf_model import HFTextEncoder

    from vlmreward.models import VisionLanguageModel
    nouns, attributes = household_vocabulary() if vocabulary is None else (list(vocabulary[0]), list(vocabulary[1]))
    cols = relation_columns(train_ds.goals, nouns, attributes)
    if len(cols) == 0:
        return None
    text = getattr(model, "text", None)
    if not isinstance(text, HFTextEncoder):
        raise ValueError("the relation head reads token states of a Hugging Face text tower; this model has none")
    # the model's tokenizer and preprocessing as the reward uses them (of_module puts the module in eval mode)
    was_training = model.training
    vlm = VisionLanguageModel.of_module(model, model_name)
    model.train(was_training)
    hf_tokenizer, context_length = vlm.tokenizer.tokenizer, int(vlm.tokenizer.context_length)
    kw = vlm.preprocess_kwargs
    size, grid = kw["image_size"], 7
    if size % grid:
        raise ValueError(f"the relation head needs a model input size that is a multiple of {grid}, got {size}")
    envs = [e for e, ec in enumerate(train_ds.env_goals) if np.isin(ec, cols).any()]
    rows = np.flatnonzero(np.isin(train_ds.env_index, envs))
    goals = [train_ds.goals[c] for c in cols]
    is_train = train_ds.train_goal_mask[cols]
    partial = attribute_captions(goals)
    index = {g: i for i, g in enumerate(goals)}
    cover = torch.zeros(len(goals), len(partial))  # goal g makes partial caption p true
    for p, covered in enumerate(partial.values()):
        cover[[index[g] for g in covered], p] = 1.0
    captions = [g for g, t in zip(goals, is_train) if t] + list(partial)
    n_goals = int(is_train.sum())
    wordings = training_captions(captions)  # (C, T) strings
    C, T = len(wordings), len(wordings[0])
    t0 = time.time()
    states = object_token_states(text, hf_tokenizer, [w for row in wordings for w in row], nouns, attributes,
                                 context_length=context_length)
    states = [s.reshape(C, T, *s.shape[1:]) for s in states]  # (C, T, 2, W) x 2, (C, T, 2, 1)
    log(f"relation head: {len(rows)} frames of {[train_ds.env_ids[e] for e in envs]}, {n_goals} training goals + "
        f"{len(partial)} partial goals x {T} wordings (token states {time.time() - t0:.0f} s)")

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    head = RelationHead(nouns, attributes, grid=grid, cell_size=size // grid, text_width=states[0].shape[-1])
    bias = torch.nn.Parameter(torch.tensor(-5.0))  # training-only bias of the BCE term
    opt = torch.optim.AdamW([*head.parameters(), bias], lr=lr, weight_decay=0.01)
    steps = max(1, epochs * (len(rows) // batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    labels = torch.from_numpy(train_ds.labels[:, cols])
    head.train()
    step = 0
    for _ in range(epochs):
        order = rows[torch.randperm(len(rows), generator=g).numpy()]
        for i in range(0, len(order) - batch_size + 1, batch_size):
            b = np.sort(order[i:i + batch_size])
            pixels = preprocess(torch.from_numpy(train_ds.frames[b]), **kw)
            y_goals = labels[b].float()
            y = torch.cat([y_goals[:, torch.from_numpy(is_train)], (y_goals @ cover > 0).float()], 1)
            pick = torch.randint(0, T, (C,), generator=g)
            objects = head.objects(*(s[torch.arange(C), pick] for s in states))
            logits = head.log_scale.exp() * head.scores(head.cells(pixels), objects)
            loss = bce_weight * F.binary_cross_entropy_with_logits(logits + bias, y)
            if hard_negatives:
                false = logits[:, :n_goals].masked_fill(y[:, :n_goals] > 0, float("-inf"))
                top = false.topk(min(hard_negatives, n_goals), dim=1).values
                top = top[torch.isfinite(top)]
                if top.numel():
                    loss = loss + bce_weight * F.binary_cross_entropy_with_logits(top + bias, torch.zeros_like(top))
            for lo, yy in ((logits[:, :n_goals], y[:, :n_goals]), (logits[:, n_goals:], y[:, n_goals:])):
                pos = yy.sum(1) > 0
                if pos.any():  # multi-positive softmax cross-entropy over the captions that hold
                    loss = loss - (torch.log_softmax(lo, 1) * yy).sum(1)[pos].div(yy.sum(1)[pos]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 100 == 0 or step == steps:
                log(f"relation head: step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
    return head.eval()
