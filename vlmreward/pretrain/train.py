"""``vlmreward pretrain``: train the embedded default reward model (an open_clip CLIP) on the project's envs.

Data: :func:`vlmreward.pretrain.dataset.default_recipe` (labelled frames of all five environments, split by
seed). Captions: the training goals and partial goals (held-out pairs never) in their training wordings
(:func:`~vlmreward.pretrain.captions.training_captions`; each step draws one wording per caption and scores
the batch against the captions that hold on it plus a random sample of the others, ``max_captions`` in all).
Loss: :class:`~vlmreward.pretrain.loss.MultiPositiveClipLoss` + the paper's reward as a classifier
(:func:`~vlmreward.pretrain.loss.reward_bce`, optionally with within-family hard queries) + optionally the
per-goal :func:`~vlmreward.pretrain.loss.family_sigmoid`. Validation per epoch: average precision of the reward
probability (paper eq. 1) on validation seeds, training and held-out goals. Checkpoints are atomic
(``<out>/checkpoint.pt``), ``--resume`` continues from the last finished epoch; the run is seeded.

Reproduce v1 of the shipped model; v2 continues it (``--init``, ``--hard-queries``, ``--sigmoid-weight``;
exact command in vlmreward/assets/default/RECIPE.json and docs/default_model.md)::

    vlmreward pretrain --export vlmreward/assets/default
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlmreward import config, fileio
from vlmreward.config import option, require
from vlmreward.models import (VisionLanguageModel, build_model, load_model, load_weights, model_config,
                              read_hub_dir, read_state_dict, save_hub_dir, state_to_save)
from vlmreward.pretrain.captions import attribute_captions, training_captions
from vlmreward.pretrain.dataset import FrameDataset, default_recipe, load_or_generate
from vlmreward.pretrain.loss import MultiPositiveClipLoss, family_sigmoid, reward_bce, sample_goal_sets
from vlmreward.pretrain.reference import REFERENCE_FILE, reference_rewards
from vlmreward.pretrain.relation import train_relation_head
from vlmreward.pretrain.text import CaptionEncoder

DEFAULT_MODEL = "VLMR-ConvMixer-256-4-84-MiniLM"


@dataclass
class PretrainConfig:
    """Every hyper-parameter of a run (saved in checkpoints and in the shipped RECIPE.json)."""
    model: str = option(DEFAULT_MODEL, "registered open_clip architecture to train (vlmreward/model_configs)")
    epochs: int = option(12, "training epochs")
    steps_per_epoch: int = option(1000, "optimiser steps per epoch")
    batch_size: int = option(128, "frames per step")
    lr: float = option(1e-3, "peak AdamW learning rate (linear warm-up, cosine decay)")
    weight_decay: float = option(0.05, "AdamW weight decay (not on gains, biases, logit_scale)")
    warmup_steps: int = option(100, "linear warm-up steps")
    num_negatives: int = option(8, "reward loss: negatives per query, sampled from (2, 4, ..., num_negatives)")
    num_queries: int = option(8, "reward loss: query goals per frame")
    clip_weight: float = option(0.5, "weight of the contrastive term beside the reward term")
    hard_queries: int = option(3, "reward loss: of the num_queries, this many are the frame's highest-scoring "
                                  "goals that do not hold (within-family hard negatives; v1: 0)")
    sigmoid_weight: float = option(1.0, "weight of the per-goal sigmoid loss within the family (v1: 0)")
    attribute_captions: bool = option(True, "also train partial goals ('go to the red object', 'go to the key') "
                                            "in the contrastive and sigmoid terms (v1-2: off)")
    init: str = option("", "warm start: a hub directory (e.g. vlmreward/assets/default) to load first")
    relation_head: bool = option(True, "then train the object-relation head that scores two-object goals "
                                       "(vlmreward.relation; v1-v6: off)")
    relation_epochs: int = option(1, "epochs of the relation head over the frames of two-object goals")
    relation_hard_negatives: int = option(0, "relation head: per frame, also the BCE of its this-many highest-scoring "
                                             "goals that do not hold (0: off, v7)")
    positive_fraction: float = option(0.5, "share of sampled frames (per environment) where a training goal holds")
    eval_negatives: int | None = option(None, "validation: negatives per goal sampled from the task set "
                                              "(default: all of it, as vlmreward train and evaluate; v1-v5: 8)")
    max_val_frames: int = option(4000, "validation on an evenly strided subset (keeps epochs short)")
    data_scale: float = option(1.0, "multiplies the default recipe's episode counts")
    max_captions: int = option(768, "captions scored per step: those that hold on the batch + a random sample")
    view: str = option("", "household frames: 'egocentric' or 'room' (empty: the environments' default)")
    heldout_states: bool = option(True, "also train on household frames where a held-out goal holds (as "
                                        "negatives of the training goals); off: the zero-shot protocol")
    env_weights: str = option("Lift=2,PickPlace=2.5,CartPoleUpright=0.5,MountainCarFlag=0.5",
                              "share of each environment in a batch (unlisted: 1); the v4 default oversamples "
                              "the harder household tasks")
    precision: str = option("bf16", "'bf16': the image tower runs under autocast to bfloat16 (weights, losses "
                                    "and the exported model stay float32; the shipped v4 recipe), or 'fp32'; "
                                    "which is faster depends on the CPU (docs/default_model.md)")
    data_dir: str = option("data/pretrain", "cache folder of the generated datasets")
    out: str = option("runs/pretrain", "run folder (checkpoint.pt, best/, final/, history.json)")
    export: str = option("", "also write the final model here in open_clip hub layout (+ RECIPE.json)")
    seed: int = option(0, "seed of the model, the sampling and the validation negatives")
    threads: int = option(1, "torch CPU threads")
    resume: bool = option(False, "continue from <out>/checkpoint.pt")
    progress: bool = option(True, "show progress bars")

    def check(self) -> None:
        """Validates field values; raises ConfigError (a ValueError) naming the bad field."""
        require(self.precision in ("fp32", "bf16"), f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        require(self.epochs >= 1 or (self.epochs == 0 and self.init),
                f"epochs must be >= 1 (0 only with init: train the relation head alone), got {self.epochs}")
        for name in ("steps_per_epoch", "batch_size", "warmup_steps", "num_negatives", "num_queries",
                     "eval_negatives", "threads", "relation_epochs"):
            value = getattr(self, name)
            require(value is None and name == "eval_negatives" or value >= 1, f"{name} must be >= 1, got {value}")
        require(self.relation_hard_negatives >= 0,
                f"relation_hard_negatives must be >= 0, got {self.relation_hard_negatives}")
        require(0.0 < self.positive_fraction < 1.0,
                f"positive_fraction must be in (0, 1), got {self.positive_fraction}")
        require(self.data_scale > 0, f"data_scale must be > 0, got {self.data_scale}")
        from vlmreward.envs.household import VIEWS
        require(self.view in ("", *VIEWS), f"view must be '' or one of {VIEWS}, got {self.view!r}")
        require(self.max_captions >= 2, f"max_captions must be >= 2, got {self.max_captions}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and one flag per ``PretrainConfig`` field (:mod:`vlmreward.config`)."""
    config.add_arguments(parser, PretrainConfig, shipped=False)


def run(args: argparse.Namespace) -> int:
    cfg = config.from_namespace(PretrainConfig, args)
    metrics = train(cfg, argv=sys.argv)
    print(json.dumps(metrics["val"], indent=1))
    return 0


# ----- data helpers ------------------------------------------------------------------------------------
def to_pixels(frames_u8: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B,S,S,3) already at the model's size -> normalised float (B,3,S,S) (what preprocess gives)."""
    x = frames_u8.permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def parse_env_weights(spec: str, env_ids) -> np.ndarray:
    """"Lift=2,PickPlace=2.5" -> one weight per environment of ``env_ids`` (unlisted: 1), summing to 1.

    Names are environment families ("Lift") or full ids ("vlmreward/Lift-v0"); a registered environment
    that is not in ``env_ids`` is skipped (so the default applies to any dataset). Raises ValueError for an
    unknown name, a malformed item or a weight that is not a finite number > 0.
    """
    from vlmreward.envs import ENV_IDS, family

    fams = [family(e) for e in env_ids]
    known = set(fams) | {family(e) for e in ENV_IDS}
    w = np.ones(len(fams))
    for item in filter(None, (t.strip() for t in spec.split(","))):
        name, sep, value = item.partition("=")
        name = family(name)
        if not sep or name not in known:
            raise ValueError(f"env_weights: bad item {item!r}; expected NAME=WEIGHT with NAME in {sorted(known)}")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"env_weights: {value!r} in {item!r} is not a number") from None
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"env_weights: the weight of {name} must be finite and > 0, got {value}")
        if name in fams:
            w[fams.index(name)] = weight
    return w / w.sum()


def heldout_state_rows(ds: FrameDataset) -> np.ndarray:
    """bool (N,): frames of the household families where a held-out goal holds (a held-out (colour, type)
    pair faced, carried or placed). Classic control is left out: its held-out goals are other regions of the
    same state space, needed as negatives of its training goal."""
    from vlmreward.envs import family
    from vlmreward.envs.household import FAMILIES
    rows = np.zeros(len(ds), dtype=bool)
    for e, env_id in enumerate(ds.env_ids):
        if family(env_id).lower() in FAMILIES:
            cols = [c for c in ds.env_goals[e] if not ds.train_goal_mask[c]]
            rows |= (ds.env_index == e) & ds.labels[:, cols].any(1)
    return rows


def sampling_weights(ds: FrameDataset, train_cols: np.ndarray, positive_fraction: float,
                     env_weights: str = "", exclude: np.ndarray | None = None) -> torch.Tensor:
    """Per-frame weights: each environment gets its share (equal, or per :func:`parse_env_weights`), within
    it ``positive_fraction`` of frames where a training goal holds (positives are rare in most environments).
    Frames where ``exclude`` (bool (N,)) is set get weight 0."""
    pos = ds.labels[:, train_cols].any(1)
    w = np.zeros(len(ds))
    shares = parse_env_weights(env_weights, ds.env_ids)
    present = np.unique(ds.env_index)
    shares = shares / shares[present].sum()
    for e in present:
        for flag, share in ((True, positive_fraction), (False, 1 - positive_fraction)):
            m = (ds.env_index == e) & (pos == flag)
            if exclude is not None:
                m &= ~exclude
            if m.any():
                w[m] = share / m.sum()
        m = ds.env_index == e
        w[m] *= shares[e] / w[m].sum()
    return torch.as_tensor(w)


@torch.no_grad()
def validate(model, model_name: str, ds: FrameDataset, num_negatives: int | None, seed: int = 0,
             wordings: int = 2, relation_head=None) -> dict:
    """Average precision of the paper's reward probability (eq. 1), per environment: training goals, held-out
    goals, and the training goals in the first ``wordings`` evaluation-only wordings:
    {family: {"ap_train", "ap_heldout", "ap_eval:0", ...}} (NaN without both classes).

    The numbers are those of ``vlmreward evaluate`` on the same frames and model: the same goal banks, negatives,
    reward model and metrics (:func:`vlmreward.evaluation.dataset_scores`, :func:`~vlmreward.evaluation.group_metrics`).
    ``model`` (the open_clip module of architecture ``model_name``, with ``relation_head`` if given) is put
    back in train mode.
    """
    from vlmreward.evaluation import dataset_scores, family, group_metrics
    try:
        scores = dataset_scores(VisionLanguageModel.of_module(model, model_name, relation_head), ds,
                                num_negatives=num_negatives, seed=seed, wordings=wordings)
    finally:
        model.train()
    return {family(env_id): {f"ap_{group}": group_metrics(s).get("average_precision", float("nan"))
                             for group, s in groups.items()} for env_id, groups in scores.items()}


def _score(val: dict) -> float:
    """Mean training-goal AP: what picks ``best/`` (never held-out goals or evaluation wordings)."""
    vals = [r["ap_train"] for r in val.values() if not math.isnan(r.get("ap_train", float("nan")))]
    return float(np.mean(vals)) if vals else 0.0


def param_groups(model, weight_decay: float):
    """open_clip's convention: no weight decay on gains, biases, embeddings-like 1-d params, logit_scale."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "bn" in n or "ln" in n or "logit_scale" in n else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _warm_start(model, path) -> None:
    """Load the trained weights of a hub directory (:func:`vlmreward.models.save_hub_dir`) into ``model``.

    Raises FileNotFoundError for a missing directory or file, ValueError when its weights do not fit ``model``
    (both messages start with "init:").
    """
    try:
        config, weights = read_hub_dir(path)
        load_weights(model, read_state_dict(weights), config["model_cfg"], source=repr(str(weights)))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"init: {e}") from e
    except ValueError as e:
        raise ValueError(f"init: weights in {path} do not fit the model: {e}") from e


def _datasets(cfg: PretrainConfig, size: int, train_ds, val_ds):
    """The training and validation sets (the cached default recipe unless given), validation strided down to
    ``max_val_frames``; ValueError for an empty set or frames of the wrong size."""
    if train_ds is None:
        train_ds = load_or_generate(default_recipe("train", size, cfg.data_scale, cfg.view), cfg.data_dir,
                                    cfg.progress)
    if val_ds is None:
        val_ds = load_or_generate(default_recipe("val", size, cfg.data_scale, cfg.view), cfg.data_dir, cfg.progress)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError("empty dataset: no frames to train or validate on")
    if len(val_ds) > cfg.max_val_frames > 0:
        keep = np.linspace(0, len(val_ds) - 1, cfg.max_val_frames).round().astype(int)
        val_ds = dataclasses.replace(val_ds, frames=val_ds.frames[keep], labels=val_ds.labels[keep],
                                     env_index=val_ds.env_index[keep], seed=val_ds.seed[keep],
                                     episode_goal=None, success=None)
    if train_ds.frames.shape[1] != size:
        raise ValueError(f"dataset frames are {train_ds.frames.shape[1]} px, model {cfg.model} needs {size}")
    return train_ds, val_ds


def caption_targets(ds: FrameDataset, train_cols: np.ndarray, with_attributes: bool):
    """(captions' goal texts, labels bool (N, C), env_cand bool (E, C)) over the C caption columns: the training
    goals first, then (``with_attributes``) the partial goals of :func:`attribute_captions` that hold on some
    frame; ``env_cand[e, c]``: caption c belongs to environment e's task set."""
    goals = [ds.goals[c] for c in train_cols]
    labels = [ds.labels[:, train_cols]]
    env_cand = np.stack([np.isin(train_cols, cols) for cols in ds.env_goals])
    partial = attribute_captions(ds.goals) if with_attributes else {}
    partial = {a: [ds.goals.index(g) for g in covered] for a, covered in partial.items()}
    # a partial goal that holds on no training frame would only be an extra negative: leave it out
    partial = {a: cols for a, cols in partial.items() if ds.labels[:, cols].any()}
    if partial:  # none without household frames
        goals += list(partial)
        labels.append(np.stack([ds.labels[:, cols].any(1) for cols in partial.values()], 1))
        # a partial goal belongs to the environment of the goals it covers
        env_cand = np.concatenate([env_cand, np.stack([[cols[0] in env for cols in partial.values()]
                                                       for env in ds.env_goals])], 1)
    return goals, torch.from_numpy(np.concatenate(labels, 1)), torch.from_numpy(env_cand)


def reward_loss(goal_logits, goal_y, env, env_cand, cfg: PretrainConfig, n_neg: int, generator) -> torch.Tensor:
    """The paper's reward as a classifier (:func:`reward_bce`) per environment of the batch, with goal sets of
    ``n_neg`` negatives from the environment's own goals, weighted by the environment's share of the batch."""
    terms = []
    for e in env.unique():
        rows = env == e
        cand = env_cand[e]
        if cand.sum() < 2:  # a single training goal (classic control): negatives from all domains
            cand = torch.ones_like(cand)
        cand = cand.expand(int(rows.sum()), -1)
        q, negs, valid = sample_goal_sets(goal_y[rows], cand, cfg.num_queries, min(n_neg, int(cand[0].sum()) - 1),
                                          generator=generator, scores=goal_logits[rows].detach(),
                                          num_hard=cfg.hard_queries)
        terms.append(reward_bce(goal_logits[rows], goal_y[rows], q, negs, valid) * rows.float().mean())
    return torch.stack(terms).sum()


def step_columns(y: torch.Tensor, max_captions: int, generator) -> torch.Tensor:
    """Caption columns scored in one step: every column that holds on some frame of the batch (y bool (B, C)),
    then random others up to ``max_captions`` in all; sorted int64. All C when C <= max_captions."""
    C = y.shape[1]
    if C <= max_captions:
        return torch.arange(C)
    held = y.any(0)
    rest = (~held).nonzero().squeeze(1)
    extra = rest[torch.randperm(len(rest), generator=generator)[:max(0, max_captions - int(held.sum()))]]
    return torch.sort(torch.cat([held.nonzero().squeeze(1), extra])).values


# ----- training ----------------------------------------------------------------------------------------
def train(cfg: PretrainConfig, argv=None, train_ds: FrameDataset | None = None,
          val_ds: FrameDataset | None = None) -> dict:
    """Train per ``cfg``; returns {"val": last validation metrics (with the relation head when one was trained),
    "best": best score, "history": [...], "relation_head": its {"seconds", "val"} or None, "out": run dir}.
    Datasets default to the cached default recipe (generated on first use).

    Raises ValueError for an empty dataset or a bad config, FileNotFoundError/ValueError for ``resume``
    without a (valid) checkpoint.
    """
    from tqdm.auto import tqdm
    config.check(cfg)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    mcfg = model_config(cfg.model)
    size = mcfg["vision_cfg"]["image_size"]
    train_ds, val_ds = _datasets(cfg, size, train_ds, val_ds)

    model = build_model(cfg.model)
    model.train()
    model.visual.to(memory_format=torch.channels_last)  # ~1.3-1.5x faster convolutions on CPU (oneDNN)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    train_cols = np.flatnonzero(train_ds.train_goal_mask)  # held-out goals never become captions
    goals, labels_all, env_cand = caption_targets(train_ds, train_cols, cfg.attribute_captions)
    n_goals = len(train_cols)  # caption columns [0, n_goals) are goals; after them, partial goals (no reward term)
    captions = CaptionEncoder(model, cfg.model, training_captions(goals))
    env_all = torch.from_numpy(train_ds.env_index)
    weights = sampling_weights(train_ds, train_cols, cfg.positive_fraction, cfg.env_weights,
                               exclude=None if cfg.heldout_states else heldout_state_rows(train_ds))

    # training-only bias of the sigmoid term (not part of the exported model); starts at ~0.6 x logit_scale
    sig_bias = torch.nn.Parameter(torch.tensor(0.6 * float(model.logit_scale.detach().exp())))
    groups = param_groups(model, cfg.weight_decay) + [{"params": [sig_bias], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    total = max(1, cfg.epochs * cfg.steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) * 0.5 * (
        1 + math.cos(math.pi * min(s, total) / total)))
    clip_loss = MultiPositiveClipLoss()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    start_epoch, history, best = 0, [], -1.0
    if cfg.init:
        _warm_start(model, cfg.init)
    if cfg.resume:
        state = fileio.torch_load(ckpt_path, what="pretraining checkpoint to resume from")
        if state["config"]["model"] != cfg.model:
            raise ValueError(f"checkpoint {ckpt_path} is for model {state['config']['model']}, not {cfg.model}")
        load_weights(model, state["model"], mcfg, source=f"{ckpt_path} of {cfg.model}")
        if "sigmoid_bias" in state:
            sig_bias.data.fill_(float(state["sigmoid_bias"]))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, history, best = state["epoch"], json.loads(state["history"]), state["best"]

    for epoch in range(start_epoch, cfg.epochs):
        g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)  # epoch-seeded: resume replays exactly
        idx = torch.multinomial(weights, cfg.steps_per_epoch * cfg.batch_size, replacement=True, generator=g)
        bar = tqdm(range(cfg.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress)
        sums, t0 = {"loss": 0.0, "clip": 0.0, "reward": 0.0, "sigmoid": 0.0}, time.time()
        for step in bar:
            b = idx[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            pixels = to_pixels(torch.from_numpy(train_ds.frames[b.numpy()]), mean, std)
            cols = step_columns(labels_all[b], cfg.max_captions, g)
            y, env, cand = labels_all[b][:, cols], env_all[b], env_cand[:, cols]
            n_goal_cols = int((cols < n_goals).sum())  # goal columns first (cols is sorted)
            with torch.autocast(pixels.device.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
                img = model.encode_image(pixels.contiguous(memory_format=torch.channels_last))
            img = F.normalize(img.float(), dim=-1)
            txt = captions(torch.randint(0, captions.T, (len(cols),), generator=g), cols)
            scale = model.logit_scale.exp()
            logits = scale * img @ txt.T
            l_clip = clip_loss(img, txt, scale, y)
            n_neg = int(2 ** torch.randint(1, int(math.log2(cfg.num_negatives)) + 1, (), generator=g))
            l_rew = reward_loss(logits[:, :n_goal_cols], y[:, :n_goal_cols], env, cand[:, :n_goal_cols], cfg, n_neg, g)
            l_sig = (family_sigmoid(logits, y, cand[env], sig_bias) if cfg.sigmoid_weight
                     else logits.sum() * 0.0)
            loss = l_rew + cfg.clip_weight * l_clip + cfg.sigmoid_weight * l_sig
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            for k, v in (("loss", loss), ("clip", l_clip), ("reward", l_rew), ("sigmoid", l_sig)):
                sums[k] += float(v.detach())
            bar.set_postfix(loss=f"{loss.item():.3f}", scale=f"{scale.item():.1f}")
        val = validate(model, cfg.model, val_ds, cfg.eval_negatives, seed=cfg.seed)
        score = _score(val)
        rec = {"epoch": epoch + 1, **{k: v / cfg.steps_per_epoch for k, v in sums.items()},
               "logit_scale": float(model.logit_scale.detach().exp()), "seconds": time.time() - t0, "val": val,
               "val_score": score}
        history.append(rec)
        print(json.dumps(rec), flush=True)
        if score > best:
            best = score
            save_hub_dir(out / "best", model, mcfg, extra={"architecture": cfg.model})
        fileio.torch_save(ckpt_path, {"model": state_to_save(model, mcfg), "optimizer": opt.state_dict(),
                                        "scheduler": sched.state_dict(), "epoch": epoch + 1, "best": best,
                                        "sigmoid_bias": float(sig_bias.detach()),
                                        "history": json.dumps(history), "config": asdict(cfg)})
    head, relation = None, None
    if cfg.relation_head:
        t0 = time.time()
        head = train_relation_head(model, cfg.model, train_ds, seed=cfg.seed, epochs=cfg.relation_epochs,
                                   hard_negatives=cfg.relation_hard_negatives, log=lambda line: print(line, flush=True))
        if head is not None:
            relation = {"seconds": time.time() - t0,
                        "val": validate(model, cfg.model, val_ds, cfg.eval_negatives, seed=cfg.seed,
                                        relation_head=head)}
            print(json.dumps({"relation_head": relation}), flush=True)
            fileio.write_json(out / "relation_head.json", relation, indent=1)
    save_hub_dir(out / "final", model, mcfg, extra={"architecture": cfg.model}, relation_head=head)
    val = relation["val"] if relation else history[-1]["val"] if history else {}
    result = {"val": val, "best": best, "history": history, "relation_head": relation, "out": str(out)}
    fileio.write_json(out / "history.json", history, indent=1)
    if cfg.export:
        recipe = {"command": " ".join(["vlmreward", "pretrain", *(argv or [])[2:]]) if argv else None,
                  "config": asdict(cfg), "data_recipe": {s: asdict(default_recipe(s, size, cfg.data_scale, cfg.view))
                                                         for s in ("train", "val")},
                  "train_frames": len(train_ds), "val_frames": len(val_ds), "history": history,
                  "relation_head": relation}
        init_recipe = Path(cfg.init, "RECIPE.json") if cfg.init else None
        if init_recipe is not None and init_recipe.is_file():  # provenance of a warm start: the chain of recipes
            recipe["init_recipe"] = json.loads(init_recipe.read_text())
        save_hub_dir(cfg.export, model, mcfg, extra={"architecture": cfg.model, "seed": cfg.seed}, relation_head=head)
        fileio.write_json(Path(cfg.export, "RECIPE.json"), recipe, indent=1, default=list)
        # the stability record the tests check a shipped model against (reloaded through the real loader)
        fileio.write_json(Path(cfg.export, REFERENCE_FILE), reference_rewards(load_model(str(cfg.export))), indent=1)
    return result
