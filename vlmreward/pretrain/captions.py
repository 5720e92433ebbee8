"""Training captions: every training goal and partial goal in each of its training wordings.

Wordings come from the grammar of :mod:`vlmreward.envs.language` (its evaluation-only wordings never enter
training); partial goals ("go to the red object", "go to the key") from :func:`attribute_captions`.
"""
from __future__ import annotations

import re

from vlmreward.envs.language import wordings


def training_captions(goals) -> list[list[str]]:
    """One row per goal (or partial goal) of its training wordings, rows padded to equal length by cycling
    (the caption encoder draws one wording per row and step). goals: list of str; returns list[list[str]]."""
    rows = [list(wordings(g, "train")) for g in goals]
    width = max((len(r) for r in rows), default=0)
    return [[r[i % len(r)] for i in range(width)] for r in rows]


def attribute_captions(goals) -> dict[str, list[str]]:
    """Partial goals of the household families: each object of a goal named by colour only or type only.

    "go to the red ball" -> "go to the red object", "go to the ball"; "put the red ball next to the grey key"
    -> "put the red object next to the grey key", "put the ball next to the grey key", and the same for the
    second object. A partial goal holds when ANY goal it covers holds (an exact OR: a frame faces one cell,
    the agent carries one object), so its labels come from the goals' own ground truth. Purpose: colour and
    type words are trained on their own, so a held-out pair ("go to the red key") is a new combination of
    trained words rather than an unseen caption direction. A partial goal that still names a held-out pair
    in full is dropped, so held-out goals' (colour, type) pairs never appear in a training caption.

    goals: the goal strings with ground truth (the full task sets, held-out goals included: a held-out pair
    may make a partial goal true, e.g. facing the red key makes "go to the key" true).
    Returns {partial goal: [the goals it covers]} (insertion-ordered, deterministic).
    """
    from vlmreward.envs.household import FAMILIES, HELDOUT_PAIRS, goal_specs
    have = set(goals)
    out: dict[str, list[str]] = {}
    for family, (template, n, _) in FAMILIES.items():
        for goal, pairs in goal_specs(family).items():
            if goal not in have:
                continue
            for slot in range(n):
                if any(pairs[j] in HELDOUT_PAIRS for j in range(n) if j != slot):
                    continue
                colour, kind = pairs[slot]
                for partial in ((colour, "object"), ("", kind)):
                    words = [w for j, p in enumerate(pairs) for w in (partial if j == slot else p)]
                    out.setdefault(re.sub(r"\s+", " ", template.format(*words)), []).append(goal)
    return out
