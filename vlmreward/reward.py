"""The reward model: environment frames -> p(goal | frame) -> rewards, through the fused kernels.

Modes:
- "binary": ``r = 1[p > beta]`` (Baumli et al., arXiv 2312.09187, eq. 2), p from eq. 1;
- "probability": ``r = p`` (eq. 1);
- "cosine": ``r = cos(f(o), g(goal))``;
- "projection": VLM-RM's goal-baseline projection (Rocamonde et al., arXiv 2310.12921, eq. 3):
  ``r = 1 - 1/2 ||(x - t) P||^2``, ``P = alpha d d^T / ||d||^2 + (1 - alpha) I``, ``d = t - b``, with x the
  normalised image embedding and t, b the goal and baseline embeddings of the bank's template ensembling
  (unit length, or VLM-RM's unrenormalised mean). Expanded with ``u = x - t``:
  ``||uP||^2 = alpha (2 - alpha) (u.d)^2 / ||d||^2 + (1 - alpha)^2 ||u||^2``, which needs only the cosines of
  x with t and b (plus the fixed lengths of t, b and t.b), so the fused kernel computes it with the baseline as
  one extra "goal".

Scorers: "embedding" scores a frame against a goal by the cosine of their pooled embeddings (eq. 1's
``cos(f(o), g(l)) / tau``); "relation" uses the model's object-relation head (:mod:`vlmreward.relation`) for
goals that relate two objects, logits ``exp(log_scale) * score`` in eq. 1's softmax ("binary" and
"probability" modes). The default "auto" picks "relation" when the model has the head and every string of the
bank names two of its objects.

In "binary" mode a reward that never fires (or always fires) on the first ``fire_check_frames`` frames is
warned about once (RuntimeWarning with the largest / smallest p seen against beta); :meth:`RewardModel.calibrate`
chooses beta from labelled frames.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlmreward.goals import GoalBank
from vlmreward.metrics import calibrate_threshold
from vlmreward.ops import RewardOutput, as_frames, fused_reward, preprocess, validate_goal_bank

MODES = ("binary", "probability", "cosine", "projection")
SCORERS = ("auto", "embedding", "relation")


class RewardModel:
    """Rewards for goals of a :class:`GoalBank` from uint8 frames.

    Args:
        model: a :class:`vlmreward.VisionLanguageModel` (frozen).
        bank: a :class:`GoalBank` built with the same model.
        threshold: beta of eq. 2 (used by "binary"); probabilities lie in [0, 1], so a beta outside gives
            constant rewards. :func:`vlmreward.calibrate_threshold` chooses one from labelled frames.
        temperature: tau of eq. 1 (> 0); None uses the model's own ``1 / logit_scale.exp()``.
        mode: "binary", "probability", "cosine" or "projection" (see the module docstring).
        baseline: baseline prompt(s) b for "projection", embedded verbatim (no templates); several are
            ensembled like templates (the bank's ``template_ensembling``). Required by "projection", ignored
            otherwise.
        alpha: projection strength in [0, 1] for "projection" (0 gives ``r = cos`` up to an affine map).
        fire_check_frames: in "binary" mode, after this many frames (counted over calls) warn once
            (RuntimeWarning) if the reward never fired (max p <= beta) or always fired (min p > beta);
            0 disables the check. :meth:`calibrate` restarts it.
        scorer: "auto", "embedding" or "relation" (see the module docstring); the chosen one is :attr:`scorer`.
            With "relation", ``temperature=None`` uses the relation head's own ``1 / exp(log_scale)``.

    Call ``reward_model(frames, goal_ids)`` with frames uint8 (B, H, W, 3) / (H, W, 3) (numpy, torch, or a list
    of frames as ``envs.render()`` returns) and goal_ids int (B,) -> RewardOutput(probs, rewards) of (B,);
    without goal_ids every goal is scored -> (B, G). probs is always p of eq. 1; float32 on the model's device.

    Raises:
        ValueError: a bank from another model, a bad mode, threshold (not finite), temperature, alpha, baseline
            or scorer ("relation" with a model without a relation head, a bank string that does not name two
            objects, or mode "cosine" / "projection").
    """

    def __init__(self, model, bank: GoalBank, *, threshold: float = 0.5, temperature: float | None = None,
                 mode: str = "binary", baseline: str | Sequence[str] | None = None, alpha: float = 0.5,
                 fire_check_frames: int = 1000, scorer: str = "auto"):
        if not isinstance(bank, GoalBank):
            raise TypeError(f"bank must be a GoalBank, got {type(bank).__name__}")
        if bank.identity != model.identity:
            raise ValueError(f"the goal bank was built with model {bank.identity!r}, not {model.identity!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        threshold = float(threshold)
        if not np.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold}")
        if temperature is not None and not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number or None, got {temperature}")
        if scorer not in SCORERS:
            raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
        head = getattr(model, "relation_head", None)
        self._objects = None
        if scorer == "relation":
            if mode not in ("binary", "probability"):
                raise ValueError(f"the relation scorer gives probabilities, not cosines: mode must be 'binary' or "
                                 f"'probability', got {mode!r}")
            self._objects = self._embed_objects(model, bank)  # raises for a model without a head, a bad string
        elif scorer == "auto" and head is not None and mode in ("binary", "probability"):
            try:  # a string that does not name two objects fails while parsing, before the text tower runs
                self._objects = self._embed_objects(model, bank)
            except ValueError:
                pass
        scorer = "relation" if self._objects is not None else "embedding"
        self.model, self.bank, self.mode, self.threshold, self.scorer = model, bank, mode, threshold, scorer
        default_scale = head.logit_scale if scorer == "relation" else model.logit_scale
        self.temperature = 1.0 / default_scale if temperature is None else float(temperature)
        self.logit_scale = 1.0 / self.temperature
        self.alpha = float(alpha)
        if isinstance(fire_check_frames, bool) or not isinstance(fire_check_frames, (int, np.integer)) \
                or fire_check_frames < 0:
            raise ValueError(f"fire_check_frames must be an int >= 0, got {fire_check_frames!r}")
        self.fire_check_frames = int(fire_check_frames)
        self._restart_fire_check()
        self.baseline = None
        self._text, self._sets = bank.text_embeddings, bank.goal_sets
        if mode == "projection":
            if not 0.0 <= self.alpha <= 1.0:
                raise ValueError(f"alpha must be in [0, 1], got {alpha}")
            if baseline is None:
                raise ValueError("mode='projection' needs a baseline prompt, e.g. baseline='a cart with a pole'")
            self.baseline = [baseline] if isinstance(baseline, str) else list(baseline)
            if not self.baseline or not all(isinstance(b, str) and b.strip() for b in self.baseline):
                raise ValueError(f"baseline must be a non-empty string or list of strings, got {baseline!r}")
            with torch.inference_mode():
                b = F.normalize(model.encode_text(self.baseline), dim=-1).mean(0)
                if bank.template_ensembling == "normalized_mean":
                    b = F.normalize(b, dim=-1)
            # the baseline becomes goal G: its own set, so the kernel returns cos(x, b) in column G
            k = len(bank.strings)
            self._text = torch.cat([bank.text_embeddings, b.to(bank.text_embeddings)[None]])
            extra = torch.full((1, bank.goal_sets.shape[1]), -1, dtype=torch.int64, device=bank.goal_sets.device)
            extra[0, 0] = k
            self._sets = torch.cat([bank.goal_sets, extra])
            t, b = bank.goal_embeddings.double(), b.double().to(bank.goal_embeddings.device)
            self._t_dot_b, self._t_norm, self._b_norm = t @ b, t.norm(dim=-1), b.norm()  # (G,), (G,), ()
            validate_goal_bank(self._text, self._sets)
        # every goal's set holds every string of the bank (GoalBank(..., num_negatives=None), the trainer's
        # default; extra negatives included): eq. 1's denominator is the same for all goals, so scoring every goal
        # needs B x K cosines and one softmax per frame instead of B x G x (1 + N) terms (2,256 goals: ~2,000x fewer)
        sets = bank.goal_sets
        full = sets.shape[1] == len(bank.strings) and bool((sets >= 0).all())
        self._own = torch.arange(len(self._text), device=sets.device)[:, None] if full else None

    def __repr__(self):
        return (f"RewardModel(mode={self.mode!r}, scorer={self.scorer!r}, threshold={self.threshold}, "
                f"temperature={self.temperature:.4g}, goals={len(self.bank)}, model={self.model.identity!r})")

    @staticmethod
    def _embed_objects(model, bank: GoalBank) -> torch.Tensor:
        """(K, 2, D) object embeddings of the bank's strings, template-ensembled as the bank's text embeddings."""
        texts = [t.replace("{}", s) for s in bank.strings for t in bank.templates]
        with torch.inference_mode():
            e = model.encode_objects(texts).view(len(bank.strings), len(bank.templates), 2, -1).mean(1)
            e = F.normalize(e, dim=-1) if bank.template_ensembling == "normalized_mean" else e
        return e.clone()

    def goal_ids(self, goals: str | Sequence[str]) -> torch.Tensor:
        """int64 indices of goal strings in the bank, on the model's device."""
        goals = [goals] if isinstance(goals, str) else goals
        return torch.tensor([self.bank.index(g) for g in goals], dtype=torch.int64, device=self.model.device)

    def __call__(self, frames, goal_ids=None) -> RewardOutput:
        x = as_frames(frames).to(self.model.device)
        ids = None if goal_ids is None else self._check_goal_ids(goal_ids, x.shape[0])
        if self.scorer == "relation":
            probs = self._relation_probs(x, ids)
            out = RewardOutput(probs, (probs > self.threshold).float() if self.mode == "binary" else probs)
        elif self._own is not None and (ids is None or self.mode == "projection"):
            out = self._shared_softmax(x)
        else:
            kernel_mode = "cosine" if self.mode == "projection" else self.mode
            out = fused_reward(x, self.model.encode_image, self._text, self._sets, logit_scale=self.logit_scale,
                               threshold=self.threshold, goal_ids=None if self.mode == "projection" else ids,
                               mode=kernel_mode, bank_checked=True, **self.model.preprocess_kwargs)
        if self.mode == "binary" and self._fire_check is not None:
            self._check_fires(out.probs, x.shape[0])
        if self.mode != "projection":
            return out
        return self._projection(out, ids)

    def calibrate(self, frames, labels, *, goal_ids=None, target: str | float = "f1", batch_size: int = 256
                  ) -> float:
        """Choose beta from labelled frames and set it as :attr:`threshold` (the paper reads beta off
        precision-recall curves; :func:`vlmreward.calibrate_threshold`).

        Args:
            frames: uint8 (B, H, W, 3), as for a call.
            labels: ground-truth success, bool or 0/1: (B,) with ``goal_ids`` (B,), or (B, G) for every goal.
            goal_ids: the goal of each frame (as for a call), or None to label every goal of the bank.
            target: "f1" (best F1) or a precision in (0, 1] (the smallest beta reaching it).
            batch_size: frames per reward call.

        Returns beta (float), now ``self.threshold``; restarts the fire check.
        Raises ValueError for labels of the wrong shape and for the errors of ``calibrate_threshold``.
        """
        x = as_frames(frames)
        ids = None if goal_ids is None else self._check_goal_ids(goal_ids, x.shape[0])
        y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
        shape = (x.shape[0],) if ids is not None else (x.shape[0], len(self.bank))
        if y.shape != shape:
            raise ValueError(f"labels must have shape {shape} (one per frame with goal_ids, frames x goals "
                             f"without), got {y.shape}")
        probs = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], batch_size):
                xi, ids_i = x[i:i + batch_size].to(self.model.device), None if ids is None else ids[i:i + batch_size]
                if self.scorer == "relation":
                    p = self._relation_probs(xi, ids_i)
                else:
                    p = fused_reward(xi, self.model.encode_image, self.bank.text_embeddings, self.bank.goal_sets,
                                     logit_scale=self.logit_scale, threshold=self.threshold, goal_ids=ids_i,
                                     mode="probability", **self.model.preprocess_kwargs).probs
                probs.append(p.double().cpu().numpy())
        self.threshold = calibrate_threshold(np.concatenate(probs).ravel(), y.ravel(), target=target)
        self._restart_fire_check()
        return self.threshold

    def _restart_fire_check(self):
        self._fire_check = None if self.fire_check_frames == 0 else (0, None, None)  # frames seen, max p, min p

    def _check_fires(self, probs: torch.Tensor, frames: int) -> None:
        if probs.numel() == 0:
            return
        seen, hi, lo = self._fire_check
        # running extremes stay tensors: no device sync until the check
        hi = probs.max() if hi is None else torch.maximum(hi, probs.max())
        lo = probs.min() if lo is None else torch.minimum(lo, probs.min())
        seen += frames
        self._fire_check = (seen, hi, lo)
        if seen < self.fire_check_frames:
            return
        self._fire_check = None
        hi, lo, beta = float(hi), float(lo), self.threshold
        advice = ("Choose beta from labelled frames: reward_model.calibrate(frames, labels), or the best-F1 beta "
                  "of `vlmreward evaluate`.")
        if hi <= beta:
            warnings.warn(f"the binary reward did not fire on the first {seen} frames: the largest p(goal | frame) "
                          f"seen was {hi:.3f} <= beta = {beta}, so every reward was 0. {advice}",
                          RuntimeWarning, stacklevel=3)
        elif lo > beta:
            warnings.warn(f"the binary reward fired on every one of the first {seen} frames: the smallest "
                          f"p(goal | frame) seen was {lo:.3f} > beta = {beta}, so every reward was 1. {advice}",
                          RuntimeWarning, stacklevel=3)

    def _shared_softmax(self, x) -> RewardOutput:
        """All goals of a bank whose every set holds all its K strings: the kernel's cosine of each string (its
        own one-element set), then eq. 1 as one softmax over the strings per frame, read at the goals (the
        first G strings). Same (B, G) output as the kernel's per-set path (cosines (B, G + 1) with the
        baseline column in "projection" mode)."""
        cos = fused_reward(x, self.model.encode_image, self._text, self._own, logit_scale=self.logit_scale,
                           threshold=self.threshold, mode="cosine", bank_checked=True,
                           **self.model.preprocess_kwargs).rewards
        g, k = len(self.bank), len(self.bank.strings)
        with torch.inference_mode():
            probs = torch.softmax(self.logit_scale * cos[:, :k], dim=1)[:, :g].contiguous()
            rewards = ((probs > self.threshold).float() if self.mode == "binary" else probs
                       if self.mode == "probability" else torch.cat([cos[:, :g], cos[:, k:]], 1))  # + baseline
        return RewardOutput(probs, rewards)

    @torch.inference_mode()
    def _relation_probs(self, x, ids) -> torch.Tensor:
        """Eq. 1 with the relation head's logits: p (B, G) float32, or (B,) at ``ids``."""
        cells = self.model.encode_cells(preprocess(x, **self.model.preprocess_kwargs))
        logits = self.logit_scale * self.model.relation_head.scores(cells, self._objects)  # (B, K)
        g = len(self.bank)
        if self._own is not None:  # every set holds every string: one softmax per frame
            probs = torch.softmax(logits, dim=1)[:, :g]
        else:
            sets = self.bank.goal_sets  # (G, 1 + N), -1 padding
            per_set = logits[:, sets.clamp_min(0)].masked_fill(sets < 0, float("-inf"))
            probs = torch.softmax(per_set, dim=2)[:, :, 0]
        if ids is not None:
            probs = probs[torch.arange(len(ids), device=ids.device), ids]
        return probs.float().contiguous()

    def _projection(self, out: RewardOutput, ids) -> RewardOutput:
        g = len(self.bank)
        probs, cos_t, cos_b = out.probs[:, :g], out.rewards[:, :g].double(), out.rewards[:, g:].double()
        a, tb, nt, nb = self.alpha, self._t_dot_b[None], self._t_norm[None], self._b_norm
        x_t, x_b = nt * cos_t, nb * cos_b  # the kernel's cosines use normalised t and b
        u_dot_d = x_t - x_b - nt ** 2 + tb  # (x - t).(t - b)
        d2 = (nt ** 2 + nb ** 2 - 2.0 * tb).clamp_min(1e-12)  # ||t - b||^2
        u2 = 1.0 - 2.0 * x_t + nt ** 2  # ||x - t||^2
        rewards = (1.0 - 0.5 * (a * (2.0 - a) * u_dot_d ** 2 / d2 + (1.0 - a) ** 2 * u2)).float()
        if ids is not None:
            rows = torch.arange(len(ids), device=ids.device)
            probs, rewards = probs[rows, ids], rewards[rows, ids]
        return RewardOutput(probs.contiguous(), rewards.contiguous())

    def _check_goal_ids(self, goal_ids, batch: int) -> torch.Tensor:
        if isinstance(goal_ids, (int, np.integer)) and not isinstance(goal_ids, bool):
            goal_ids = [int(goal_ids)] * batch
        ids = torch.as_tensor(np.asarray(goal_ids) if isinstance(goal_ids, (list, tuple)) else goal_ids)
        if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
            raise TypeError(f"goal_ids must be integers (int64), got dtype {ids.dtype}")
        if ids.shape != (batch,):
            raise ValueError(f"goal_ids must have shape ({batch},) (one goal per frame), got {tuple(ids.shape)}")
        if batch and (int(ids.min()) < 0 or int(ids.max()) >= len(self.bank)):
            bad = ids[(ids < 0) | (ids >= len(self.bank))].tolist()
            raise IndexError(f"goal_ids out of range [0, {len(self.bank)}): {bad[:5]}")
        return ids.to(self.model.device, torch.int64)
