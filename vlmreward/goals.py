"""The goal bank: text embeddings of goals and their negatives, computed once per run.

Baumli et al. (arXiv 2312.09187, eq. 1) score a goal l against a set L = {l} + negatives, with negatives
sampled uniformly from the task set and kept FIXED for the whole run so that rewards are not stochastic.
Prompt templates are ensembled by one of :data:`TEMPLATE_ENSEMBLING`:

- ``"normalized_mean"`` (default): the mean of the L2-normalised embeddings of every template filled with the
  goal, renormalised -- CLIP's zero-shot classifier (Radford et al., arXiv 2103.00020, prompt ensembling);
- ``"mean"``: the same mean, not renormalised -- VLM-RM's goal and baseline embeddings (Rocamonde et al.,
  arXiv 2310.12921, ``CLIPReward``: normalised prompt embeddings averaged). Probabilities and cosines
  normalise the text embeddings, so the two differ only in the "projection" reward, whose ``x - t`` uses t's
  length.
"""
from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vlmreward import fileio
from vlmreward.ops import validate_goal_bank

FORMAT = "vlmreward.GoalBank/1"
TEMPLATE_ENSEMBLING = ("normalized_mean", "mean")


def _strings(values, what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    values = list(values)
    bad = [v for v in values if not isinstance(v, str) or not v.strip()]
    if bad:
        raise TypeError(f"{what} must be non-empty strings; got {bad[:3]!r}")
    return values


class GoalBank:
    """Normalised text embeddings of goals and negatives plus each goal's fixed set, for ``reward_head``.

    Args:
        model: a :class:`vlmreward.VisionLanguageModel`.
        goals: the goal strings (G >= 1, distinct), e.g. ``["the red ball", "the blue key"]``.
        templates: prompt templates with one ``{}`` each, e.g. ``("a photo of {}.", "a screenshot of {}.")``.
        template_ensembling: how a goal's template embeddings combine, one of :data:`TEMPLATE_ENSEMBLING` (see
            the module docstring).
        negatives: the task set negatives are drawn from (list of goal strings); None means ``goals``.
            A goal is never its own negative.
        num_negatives: negatives per goal, sampled uniformly without replacement from the task set minus the
            goal; None takes all of them. Goals with fewer candidates are padded with -1 in ``goal_sets``.
        seed: seed of the ``numpy.random.Generator`` that samples negatives (fixed for the life of the bank).

    Attributes:
        goals (list[str]), templates (tuple[str]), template_ensembling (str), strings (list[str], K distinct
        goal/negative strings; goals first), text_embeddings (float32 (K, D), on the model's device; L2-normalised
        with "normalized_mean", norm <= 1 with "mean"), goal_sets (int64 (G, 1+N)
        on the model's device: row g = [g, indices of its negatives..., -1 padding]), goal_embeddings ((G, D)),
        identity (the model identity the embeddings belong to).

    Warns:
        UserWarning naming the strings (goals or negatives) that the tokenizer cannot tell apart: identical token
        ids in every template, e.g. after the tokenizer's lower-casing and whitespace clean-up or its
        context-length cut. They embed identically, so such goals get the same reward (and a goal equal to
        its negative never gets p > 0.5). A warning, not an error: the bank stays usable for the other goals.

    Raises:
        ValueError: empty or duplicate goals, a template without ``{}``, negative ``num_negatives``, an unknown
            ``template_ensembling``.
        TypeError: goals/negatives/templates that are not strings.
    """

    def __init__(self, model, goals: Sequence[str], *, templates: Sequence[str] = ("{}",),
                 negatives: Sequence[str] | None = None, num_negatives: int | None = None, seed: int | None = 0,
                 template_ensembling: str = "normalized_mean"):
        goals = _strings(goals, "goals")
        if not goals:
            raise ValueError("goals is empty: a goal bank needs at least one goal")
        duplicates = sorted({g for g in goals if goals.count(g) > 1})
        if duplicates:
            raise ValueError(f"duplicate goals: {duplicates}")
        templates = (templates,) if isinstance(templates, str) else tuple(_strings(templates, "templates"))
        if not templates:
            raise ValueError("templates is empty; use ('{}',) for the bare goal")
        for t in templates:
            if t.count("{}") != 1:
                raise ValueError(f"template {t!r} must contain exactly one '{{}}' placeholder")
        if template_ensembling not in TEMPLATE_ENSEMBLING:
            raise ValueError(f"template_ensembling must be one of {TEMPLATE_ENSEMBLING}, got {template_ensembling!r}")
        task_set = list(dict.fromkeys(_strings(goals if negatives is None else negatives, "negatives")))
        if num_negatives is not None:
            if isinstance(num_negatives, bool) or not isinstance(num_negatives, (int, np.integer)):
                raise TypeError(f"num_negatives must be an int or None, got {num_negatives!r}")
            if num_negatives < 0:
                raise ValueError(f"num_negatives must be >= 0, got {num_negatives}")

        rng = np.random.default_rng(seed)
        chosen = []
        for goal in goals:
            pool = [s for s in task_set if s != goal]
            n = len(pool) if num_negatives is None else min(int(num_negatives), len(pool))
            chosen.append([pool[i] for i in rng.choice(len(pool), size=n, replace=False)] if n else [])
        if any(not c for c in chosen):
            warnings.warn("some goals have no negatives: their probability is always 1", stacklevel=2)

        strings = list(dict.fromkeys(goals + [s for c in chosen for s in c]))
        index = {s: k for k, s in enumerate(strings)}
        width = 1 + max(len(c) for c in chosen)
        goal_sets = torch.full((len(goals), width), -1, dtype=torch.int64)
        for g, (goal, negs) in enumerate(zip(goals, chosen)):
            goal_sets[g, :1 + len(negs)] = torch.tensor([index[goal]] + [index[s] for s in negs])

        same = _indistinguishable(model.tokenizer, strings, templates)
        if same:
            warnings.warn(f"the tokenizer cannot tell these goals apart (identical token ids in every template, "
                          f"e.g. after lower-casing, whitespace clean-up or the context-length cut), so they embed "
                          f"identically: {same}", UserWarning, stacklevel=2)
        self._set(model, goals, templates, strings, embed_strings(model, strings, templates, template_ensembling),
                  goal_sets, seed=None if seed is None else int(seed),
                  num_negatives=None if num_negatives is None else int(num_negatives), task_set=task_set,
                  template_ensembling=template_ensembling)

    def _set(self, model, goals, templates, strings, text_embeddings, goal_sets, **meta):
        self.model_identity = model.identity
        self.goals = list(goals)
        self.templates = tuple(templates)
        self.strings = list(strings)
        # clone() outside inference mode: a normal tensor a policy may feed into autograd
        self.text_embeddings = text_embeddings.to(model.device, torch.float32).clone()
        self.goal_sets = goal_sets.to(model.device, torch.int64).clone()
        validate_goal_bank(self.text_embeddings, self.goal_sets)  # once: reward calls pass bank_checked=True
        self.meta = meta
        self._index = {g: i for i, g in enumerate(self.goals)}

    # ---------------------------------------------------------------------------------------- queries
    def __len__(self) -> int:
        return len(self.goals)

    def __repr__(self):
        return (f"GoalBank({len(self.goals)} goals, K={len(self.strings)}, N={self.goal_sets.shape[1] - 1}, "
                f"templates={len(self.templates)}, model={self.model_identity!r})")

    @property
    def identity(self) -> str:
        return self.model_identity

    @property
    def template_ensembling(self) -> str:
        return self.meta.get("template_ensembling", "normalized_mean")  # banks saved before the option

    @property
    def goal_embeddings(self) -> torch.Tensor:
        """(G, D) float32: row g is the embedding of goal g (e.g. to condition a policy)."""
        return self.text_embeddings[: len(self.goals)]

    def index(self, goal: str) -> int:
        """Index of ``goal`` in ``goals`` (its row in ``goal_sets``). Raises KeyError naming close matches."""
        try:
            return self._index[goal]
        except (KeyError, TypeError):
            close = difflib.get_close_matches(str(goal), self.goals, n=3)
            raise KeyError(f"goal {goal!r} is not in the bank" + (f"; close: {close}" if close else "")) from None

    def negatives_of(self, goal: str) -> list[str]:
        """The fixed negatives of ``goal``."""
        row = self.goal_sets[self.index(goal), 1:].tolist()
        return [self.strings[k] for k in row if k >= 0]

    # ------------------------------------------------------------------------------------ persistence
    def save(self, path) -> Path:
        """Save embeddings, goal sets, goals, negatives, templates and the model identity (torch file, written
        atomically); returns the path."""
        path = Path(path)
        state = {"format": FORMAT, "model_identity": self.model_identity, "goals": self.goals,
                 "templates": list(self.templates), "strings": self.strings,
                 "text_embeddings": self.text_embeddings.cpu(), "goal_sets": self.goal_sets.cpu(), "meta": self.meta}
        fileio.torch_save(path, state)
        return path

    @classmethod
    def load(cls, path, model) -> "GoalBank":
        """Load a bank saved by :meth:`save` for ``model`` (no text encoding).

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a goal-bank file, or a bank built with another model (identity differs).
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"goal bank file not found: {str(path)!r}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ValueError(f"{str(path)!r} is not a readable goal bank file: {type(e).__name__}: {e}") from e
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a goal bank file (format {FORMAT})")
        if state["model_identity"] != model.identity:
            raise ValueError(f"goal bank {str(path)!r} was built with model {state['model_identity']!r}, not "
                             f"with this model ({model.identity!r}); rebuild it with GoalBank(model, ...)")
        bank = cls.__new__(cls)
        bank._set(model, state["goals"], state["templates"], state["strings"], state["text_embeddings"],
                  state["goal_sets"], **state["meta"])
        return bank


def _texts(strings, templates) -> list[str]:
    return [t.replace("{}", s) for s in strings for t in templates]


@torch.inference_mode()
def embed_strings(model, strings: list[str], templates: tuple[str, ...] = ("{}",),
                  ensembling: str = "normalized_mean") -> torch.Tensor:
    """(K, D) float32 template-ensembled text embeddings of ``strings``, as a GoalBank embeds its goals:
    mean_t normalise(g(t.format(s))), renormalised for "normalized_mean"."""
    e = F.normalize(model.encode_text(_texts(strings, templates)).float(), dim=-1)
    e = e.view(len(strings), len(templates), -1).mean(dim=1)
    return F.normalize(e, dim=-1) if ensembling == "normalized_mean" else e


def _indistinguishable(tokenizer, strings: list[str], templates: tuple[str, ...]) -> list[list[str]]:
    """Groups of strings whose token ids are identical in every template."""
    tokens = tokenizer(_texts(strings, templates)).reshape(len(strings), -1)
    groups: dict[bytes, list[str]] = {}
    for s, row in zip(strings, tokens.cpu().numpy()):
        groups.setdefault(row.tobytes(), []).append(s)
    return [g for g in groups.values() if len(g) > 1]
