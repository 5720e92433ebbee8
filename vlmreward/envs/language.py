"""Wordings of the environments' goals: a grammar for training captions and a disjoint set for evaluation.

An environment's goal string is its canonical wording ("go to the red key"); the same goal can be said in
many ways. :data:`TRAIN_WORDINGS` (at least 8 per household family: verbs, relation words, articles, word
order) are what the default model is trained on; :data:`EVAL_WORDINGS` use none of their words that carry
meaning (tested) and are kept for evaluation only (``vlmreward evaluate`` reports the AP of each). Household
wordings are templates over object phrases ("red key", or the partial "red object" / "key"); classic-control
goals list theirs per goal.

Sources: Hill et al. (arXiv 1910.00571) for varied language as a driver of generalisation; the goals'
semantics are those of :mod:`vlmreward.envs.household` and :mod:`vlmreward.envs.classic`.
"""
from __future__ import annotations

import re

SPLITS = ("train", "eval")

# ----- household: templates over object phrases ("{0}" = first object, "{1}" = second) -----------------
#: The first training template of each family is its canonical goal string (the environments' own).
HOUSEHOLD_WORDINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "find": {
        "train": ("go to the {0}", "find the {0}", "face the {0}", "walk to the {0}", "stand in front of the {0}",
                  "head for a {0}", "locate the {0}", "the agent is facing the {0}",
                  "the {0} is in front of the agent"),
        "eval": ("approach the {0}", "navigate towards a {0}", "look straight at the {0}",
                 "the agent looks at the {0}", "reach the {0}", "the {0} is right ahead"),
    },
    "lift": {
        "train": ("pick up the {0}", "lift the {0}", "grab the {0}", "take a {0}", "hold the {0}",
                  "collect the {0}", "the agent is holding the {0}", "the agent carries the {0}",
                  "the {0} is in the agent's hands"),
        "eval": ("raise the {0}", "grasp a {0}", "seize the {0}", "the agent has got the {0}",
                 "get a grip on the {0}", "the {0} has been picked"),
    },
    "pickplace": {
        "train": ("put the {0} next to the {1}", "place the {0} beside the {1}", "move the {0} next to the {1}",
                  "bring the {0} to the {1}", "drop a {0} by the {1}", "set the {0} down beside the {1}",
                  "the {0} is next to the {1}", "the {0} and the {1} are side by side",
                  "next to the {1}, put the {0}"),
        "eval": ("position the {0} adjacent to the {1}", "leave a {0} near the {1}",
                 "arrange the {0} alongside the {1}", "the {0} touches the {1}",
                 "the {1} sits close to the {0}", "shift the {0} against the {1}"),
    },
}
# the canonical goal forms, to recover a goal's object phrases from its string
_CANONICAL = {family: re.compile("^" + w["train"][0].replace("{0}", "(.+?)").replace("{1}", "(.+)") + "$")
              for family, w in HOUSEHOLD_WORDINGS.items()}

# ----- classic control: wordings per goal (canonical first) -----------------------------------------------
CLASSIC_WORDINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "the pole is upright": {
        "train": ("the pole is upright", "the pole stands vertically", "a balanced pole on the cart",
                  "keep the pole up"),
        "eval": ("the pole remains perfectly straight", "the stick points to the sky")},
    "the pole is leaning to the left": {
        "train": ("the pole is leaning to the left", "the pole tilts left", "a pole falling towards the left",
                  "tip the pole to the left"),
        "eval": ("the pole slants leftwards", "the stick leans to the left side")},
    "the pole is leaning to the right": {
        "train": ("the pole is leaning to the right", "the pole tilts right", "a pole falling towards the right",
                  "tip the pole to the right"),
        "eval": ("the pole slants rightwards", "the stick leans to the right side")},
    "the cart is on the left side of the track": {
        "train": ("the cart is on the left side of the track", "the cart is far left", "move the cart to the left",
                  "a cart near the left end"),
        "eval": ("the cart has driven leftwards", "the trolley sits on the left")},
    "the cart is on the right side of the track": {
        "train": ("the cart is on the right side of the track", "the cart is far right",
                  "move the cart to the right", "a cart near the right end"),
        "eval": ("the cart has driven rightwards", "the trolley sits on the right")},
    "the car is at the top of the hill next to the flag": {
        "train": ("the car is at the top of the hill next to the flag", "the car made it to the flag",
                  "drive the car up to the flag", "a car on the right peak"),
        "eval": ("the car has reached the flag on the hilltop", "the vehicle arrives at the goal post")},
    "the car is at the bottom of the valley": {
        "train": ("the car is at the bottom of the valley", "the car rests in the valley",
                  "park the car at the lowest point", "a car down in the dip"),
        "eval": ("the car sits in the trough between the hills", "the vehicle is deep in the basin")},
    "the car is on top of the left hill": {
        "train": ("the car is on top of the left hill", "the car is up the left slope",
                  "drive the car up the left hill", "a car high on the left"),
        "eval": ("the car has climbed the western hill", "the vehicle perches on the left summit")},
}


def household_family(goal: str) -> str | None:
    """The household family whose canonical form ``goal`` has ("find", "lift", "pickplace"), else None."""
    for family, pattern in _CANONICAL.items():
        if pattern.match(goal):
            return family
    return None


def wordings(goal: str, split: str = "train") -> tuple[str, ...]:
    """The wordings of ``goal`` (canonical goal string, or a household partial goal such as "go to the key").

    split "train": the training wordings, the canonical string first; "eval": the evaluation-only ones.
    A goal the grammar does not know is its own only training wording and has no evaluation wording.
    Raises TypeError for a non-string goal, ValueError for an unknown split.
    """
    if not isinstance(goal, str):
        raise TypeError(f"goal must be a str, got {type(goal).__name__}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if goal in CLASSIC_WORDINGS:
        return CLASSIC_WORDINGS[goal][split]
    family = household_family(goal)
    if family is None:
        return (goal,) if split == "train" else ()
    objects = _CANONICAL[family].match(goal).groups()
    return tuple(_tidy(t.format(*objects)) for t in HOUSEHOLD_WORDINGS[family][split])


def _tidy(text: str) -> str:
    """Single spaces; "a" before a vowel becomes "an" ("an orange key")."""
    return re.sub(r"\ba (?=[aeiou])", "an ", re.sub(r"\s+", " ", text).strip())


def num_wordings(goal: str, split: str = "train") -> int:
    """``len(wordings(goal, split))``."""
    return len(wordings(goal, split))


def reword(goal: str, index: int, split: str = "eval") -> str:
    """Wording ``index`` of ``goal`` in ``split`` (cycling when a goal has fewer); the goal itself when it has none.

    Used to reword a whole task set the same way (all goals in evaluation wording k), so that a goal and its
    negatives are compared in one phrasing.
    """
    options = wordings(goal, split)
    return options[index % len(options)] if options else goal
