"""The reward model: environment frames -> p(goal | frame) -> rewards, through the fused kernels.

Modes:
- "binary": ``r = 1[p > beta]`` (Baumli et al., arXiv 2312.09187, eq. 2), p from eq. 1;
- "probability": ``r = p`` (eq. 1);
- "cosine": ``r = cos(f(o), g(goal))``;
- "projection": VLM-RM's goal-baseline projection (Rocamonde et al., arXiv 2310.12921, eq. 3):
  ``r = 1 - 1/2 ||(x - t) P||^2``, ``P = alpha d d^T / ||d||^2 + (1 - alpha) I``, ``d = t - b``, with x, t, b the
  normalised image, goal and baseline embeddings. Expanded with ``u = x - t``:
  ``||uP||^2 = alpha (2 - alpha) (u.d)^2 / ||d||^2 + (1 - alpha)^2 ||u||^2``, which needs only the cosines of
  x with t and b, so the fused kernel computes it with the baseline as one extra "goal".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlmreward.goals import GoalBank
from vlmreward.ops import RewardOutput, as_frames, fused_reward, validate_goal_bank

MODES = ("binary", "probability", "cosine", "projection")


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
            ensembled like templates. Required by "projection", ignored otherwise.
        alpha: projection strength in [0, 1] for "projection" (0 gives ``r = cos`` up to an affine map).

    Call ``reward_model(frames, goal_ids)`` with frames uint8 (B, H, W, 3) / (H, W, 3) (numpy, torch, or a list
    of frames as ``envs.render()`` returns) and goal_ids int (B,) -> RewardOutput(probs, rewards) of (B,);
    without goal_ids every goal is scored -> (B, G). probs is always p of eq. 1; float32 on the model's device.

    Raises:
        ValueError: a bank from another model, a bad mode, threshold (not finite), temperature, alpha or baseline.
    """

    def __init__(self, model, bank: GoalBank, *, threshold: float = 0.5, temperature: float | None = None,
                 mode: str = "binary", baseline: str | Sequence[str] | None = None, alpha: float = 0.5):
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
        self.model, self.bank, self.mode, self.threshold = model, bank, mode, threshold
        self.temperature = 1.0 / model.logit_scale if temperature is None else float(temperature)
        self.logit_scale = 1.0 / self.temperature
        self.alpha = float(alpha)
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
                b = F.normalize(F.normalize(model.encode_text(self.baseline), dim=-1).mean(0), dim=-1)
            # the baseline becomes goal G: its own set, so the kernel returns cos(x, b) in column G
            k = len(bank.strings)
            self._text = torch.cat([bank.text_embeddings, b.to(bank.text_embeddings)[None]])
            extra = torch.full((1, bank.goal_sets.shape[1]), -1, dtype=torch.int64, device=bank.goal_sets.device)
            extra[0, 0] = k
            self._sets = torch.cat([bank.goal_sets, extra])
            t = bank.goal_embeddings.double()
            self._t_dot_b = t @ b.to(t)  # (G,)
            validate_goal_bank(self._text, self._sets)

    def __repr__(self):
        return (f"RewardModel(mode={self.mode!r}, threshold={self.threshold}, temperature={self.temperature:.4g}, "
                f"goals={len(self.bank)}, model={self.model.identity!r})")

    def goal_ids(self, goals: str | Sequence[str]) -> torch.Tensor:
        """int64 indices of goal strings in the bank, on the model's device."""
        goals = [goals] if isinstance(goals, str) else goals
        return torch.tensor([self.bank.index(g) for g in goals], dtype=torch.int64, device=self.model.device)

    def __call__(self, frames, goal_ids=None) -> RewardOutput:
        x = as_frames(frames).to(self.model.device)
        ids = None if goal_ids is None else self._check_goal_ids(goal_ids, x.shape[0])
        kernel_mode = "cosine" if self.mode == "projection" else self.mode
        out = fused_reward(x, self.model.encode_image, self._text, self._sets, logit_scale=self.logit_scale,
                           threshold=self.threshold, goal_ids=None if self.mode == "projection" else ids,
                           mode=kernel_mode, bank_checked=True, **self.model.preprocess_cfg)
        if self.mode != "projection":
            return out
        return self._projection(out, ids)

    def _projection(self, out: RewardOutput, ids) -> RewardOutput:
        g = len(self.bank)
        probs, cos_t, cos_b = out.probs[:, :g], out.rewards[:, :g].double(), out.rewards[:, g:].double()
        a, tb = self.alpha, self._t_dot_b[None]
        u_dot_d = cos_t - cos_b - (1.0 - tb)  # (x - t).(t - b)
        d2 = (2.0 - 2.0 * tb).clamp_min(1e-12)  # ||t - b||^2
        u2 = 2.0 - 2.0 * cos_t  # ||x - t||^2
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
