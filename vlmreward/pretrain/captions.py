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
