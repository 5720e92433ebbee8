"""Caption templates for training and paraphrases kept for evaluation only.

Training captions are the goal strings of the environments' ``train_goals`` wrapped in
:data:`TRAIN_TEMPLATES`. :func:`paraphrase` rewrites a goal with words and phrasings that never occur in
training (e.g. "go to the red ball" -> "walk up to the red ball"), to measure how a model's text tower
generalises (issue 5: "paraphrased goals").
"""
from __future__ import annotations

import re

#: Templates used in training; "{}" (the bare goal, what ``GoalBank`` uses by default) comes first.
TRAIN_TEMPLATES = ("{}", "{}.", "goal: {}", "a frame where {}", "an image: {}")

# (pattern, replacement) rules; none of the replacement words is used by the goals or TRAIN_TEMPLATES.
_PARAPHRASES = (
    (r"^go to the (.+)$", r"walk up to the \1"),
    (r"^pick up the (.+)$", r"grab the \1"),
    (r"^put the (.+) next to the (.+)$", r"place the \1 beside the \2"),
    (r"^the pole is upright$", "the pole stands straight up"),
    (r"^the car is at the top of the hill next to the flag$", "the car has reached the flag on the hilltop"),
)
_FALLBACK = "a screenshot showing that {}"


def paraphrase(goal: str) -> str:
    """Evaluation-only rewording of ``goal`` (str -> str); raises TypeError for a non-string."""
    if not isinstance(goal, str):
        raise TypeError(f"goal must be a str, got {type(goal).__name__}")
    for pattern, repl in _PARAPHRASES:
        if re.match(pattern, goal):
            return re.sub(pattern, repl, goal)
    return _FALLBACK.format(goal)


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
