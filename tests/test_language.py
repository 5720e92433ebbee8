"""The grammar of goal wordings: training wordings per family, evaluation-only wordings disjoint from them."""
import re

import gymnasium as gym
import pytest

import vlmreward  # noqa: F401  (registers the ids)
from vlmreward.envs import ENV_IDS
from vlmreward.envs.language import CLASSIC_WORDINGS, HOUSEHOLD_WORDINGS, household_family, reword, wordings
from vlmreward.pretrain.captions import attribute_captions, training_captions

# words that carry no meaning of their own (articles, the objects' slots, the agent)
FUNCTION_WORDS = {"the", "a", "an", "is", "to", "of", "on", "in", "at", "and", "agent", "agent's", "{0}", "{1}",
                  "pole", "cart", "car", "track", "hill", "left", "right", "flag", "valley", "side", "up"}


def _words(texts):
    return {w for t in texts for w in re.findall(r"[\w{}']+", t.lower())} - FUNCTION_WORDS


@pytest.mark.parametrize("family", sorted(HOUSEHOLD_WORDINGS))
def test_household_grammar_has_eight_training_wordings_and_disjoint_eval_words(family):
    w = HOUSEHOLD_WORDINGS[family]
    assert len(set(w["train"])) >= 8 and len(set(w["eval"])) >= 4
    assert not _words(w["train"]) & _words(w["eval"]), _words(w["train"]) & _words(w["eval"])


@pytest.mark.parametrize("goal", sorted(CLASSIC_WORDINGS))
def test_classic_goals_have_training_and_disjoint_eval_wordings(goal):
    train, ev = wordings(goal, "train"), wordings(goal, "eval")
    assert train[0] == goal and len(train) >= 3 and len(ev) >= 2
    # within one goal, an evaluation wording shares no content word with its training wordings
    assert not _words(train) & _words(ev), _words(train) & _words(ev)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_every_goal_is_worded_injectively(env_id):
    """Wording k of every goal of a task set is a distinct string (goal and negatives stay apart), the first
    training wording is the goal itself, and no evaluation wording is a training wording of any goal."""
    base = gym.make(env_id).unwrapped
    train_strings = {s for g in base.task_set for s in wordings(g, "train")}
    for goal in base.task_set:
        assert wordings(goal, "train")[0] == goal
        assert household_family(goal) == (getattr(base, "family", None))
    n_eval = max(len(wordings(g, "eval")) for g in base.task_set)
    for k in range(n_eval):
        said = [reword(g, k) for g in base.task_set]
        assert len(set(said)) == len(said)
        assert not set(said) & train_strings


def test_articles_and_partial_goals():
    assert "head for an orange key" in wordings("go to the orange key")
    partial = attribute_captions(["pick up the red ball", "pick up the red box"])
    assert "pick up the red object" in partial and "pick up the ball" in partial
    assert "lift the red object" in wordings("pick up the red object")
    rows = training_captions(["go to the red ball", "the pole is upright"])
    assert len(rows[0]) == len(rows[1]) >= 8 and rows[1][0] == "the pole is upright"
    assert wordings("some goal of a user") == ("some goal of a user",) and wordings("x", "eval") == ()
    with pytest.raises(ValueError, match="split"):
        wordings("go to the red ball", "test")
    with pytest.raises(TypeError):
        wordings(3)
