"""GoalBank: template ensembling, fixed negatives, caching."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import build_tiny_clip, save_hub_layout
from vlmreward.goals import GoalBank
from vlmreward.models import load_model

GOALS = ["the red ball", "the blue key", "the green box"]
TASK_SET = GOALS + ["the yellow door", "the purple ball", "the grey key", "the red box"]
TEMPLATES = ("a photo of {}.", "there is {} in the room", "{}")


def test_embeddings_are_template_ensembles(tiny_model):
    bank = GoalBank(tiny_model, GOALS, templates=TEMPLATES, negatives=TASK_SET)
    assert bank.strings[:3] == GOALS and sorted(bank.strings) == sorted(TASK_SET)
    assert bank.text_embeddings.shape == (len(TASK_SET), 32) and bank.text_embeddings.dtype == torch.float32
    for k, s in enumerate(bank.strings):  # independent: one string at a time, float64
        e = F.normalize(tiny_model.encode_text([t.replace("{}", s) for t in TEMPLATES]).double(), dim=-1)
        expected = F.normalize(e.mean(0), dim=0)
        torch.testing.assert_close(bank.text_embeddings[k].double(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(bank.text_embeddings.norm(dim=-1), torch.ones(len(TASK_SET)))
    torch.testing.assert_close(bank.goal_embeddings, bank.text_embeddings[:3])
    plain = GoalBank(tiny_model, GOALS, templates=("{}",))
    torch.testing.assert_close(plain.text_embeddings, F.normalize(tiny_model.encode_text(GOALS), dim=-1))
    assert not torch.allclose(plain.goal_embeddings, bank.goal_embeddings, atol=1e-3)  # templates matter


def test_all_negatives_by_default(tiny_model):
    bank = GoalBank(tiny_model, GOALS)
    assert bank.goal_sets.shape == (3, 3) and bank.goal_sets.dtype == torch.int64
    for g, goal in enumerate(GOALS):
        assert bank.goal_sets[g, 0] == g == bank.index(goal)
        assert sorted(bank.negatives_of(goal)) == sorted(set(GOALS) - {goal})


def test_sampled_negatives_fixed_uniform_and_exclude_goal(tiny_model):
    bank = GoalBank(tiny_model, GOALS, negatives=TASK_SET, num_negatives=3, seed=7)
    assert bank.goal_sets.shape == (3, 4)
    for goal in GOALS:
        negs = bank.negatives_of(goal)
        assert len(negs) == 3 == len(set(negs)) and goal not in negs and set(negs) <= set(TASK_SET)
    same = GoalBank(tiny_model, GOALS, negatives=TASK_SET, num_negatives=3, seed=7)
    assert torch.equal(same.goal_sets, bank.goal_sets) and same.strings == bank.strings
    # the same Generator, drawn independently here
    rng = np.random.default_rng(7)
    for goal in GOALS:
        pool = [s for s in TASK_SET if s != goal]
        assert bank.negatives_of(goal) == [pool[i] for i in rng.choice(len(pool), size=3, replace=False)]
    # uniform over the task set minus the goal: frequencies over many seeds
    counts = {s: 0 for s in TASK_SET}
    for seed in range(40):
        for s in GoalBank(tiny_model, ["the red ball"], negatives=TASK_SET, num_negatives=3, seed=seed).negatives_of(
                "the red ball"):
            counts[s] += 1
    assert counts["the red ball"] == 0
    freq = np.array([counts[s] for s in TASK_SET if s != "the red ball"]) / (40 * 3)
    np.testing.assert_allclose(freq, 1 / 6, atol=0.1)  # sd ~0.026 at 40 seeds


def test_padding_when_the_task_set_is_short(tiny_model):
    with pytest.warns(UserWarning, match="no negatives"):
        bank = GoalBank(tiny_model, ["a", "b"], negatives=["a"], num_negatives=2)
    assert bank.goal_sets.tolist() == [[0, -1], [1, 0]]


def test_save_load_round_trip(tmp_path, tiny_model):
    bank = GoalBank(tiny_model, GOALS, templates=TEMPLATES, negatives=TASK_SET, num_negatives=2, seed=3)
    loaded = GoalBank.load(bank.save(tmp_path / "bank.pt"), tiny_model)
    assert torch.equal(loaded.text_embeddings, bank.text_embeddings)
    assert torch.equal(loaded.goal_sets, bank.goal_sets)
    assert loaded.goals == GOALS and loaded.templates == TEMPLATES
    assert [loaded.negatives_of(g) for g in GOALS] == [bank.negatives_of(g) for g in GOALS]


def test_cache_from_another_model_is_refused(tmp_path, tiny_model):
    path = GoalBank(tiny_model, GOALS).save(tmp_path / "bank.pt")
    other = load_model(str(save_hub_layout(build_tiny_clip(seed=9), tmp_path / "other")))
    with pytest.raises(ValueError, match="built with model"):
        GoalBank.load(path, other)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable goal bank"):
        GoalBank.load(tmp_path / "junk.pt", tiny_model)
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="not a goal bank"):
        GoalBank.load(tmp_path / "dict.pt", tiny_model)
    with pytest.raises(FileNotFoundError):
        GoalBank.load(tmp_path / "missing.pt", tiny_model)


def test_embeddings_usable_in_autograd(tiny_model):
    bank = GoalBank(tiny_model, GOALS)
    layer = torch.nn.Linear(32, 4)
    layer(bank.goal_embeddings).sum().backward()  # not an inference tensor
    assert layer.weight.grad is not None


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(goals=[]), ValueError, "empty"),
    (dict(goals=["a", "a"]), ValueError, "duplicate"),
    (dict(goals="the red ball"), TypeError, "single string"),
    (dict(goals=["a", 3]), TypeError, "non-empty strings"),
    (dict(goals=["a", " "]), TypeError, "non-empty strings"),
    (dict(goals=["a"], templates=("a photo",)), ValueError, "placeholder"),
    (dict(goals=["a"], templates=()), ValueError, "templates is empty"),
    (dict(goals=["a", "b"], num_negatives=-1), ValueError, ">= 0"),
    (dict(goals=["a", "b"], num_negatives=1.5), TypeError, "int"),
])
def test_bad_input(tiny_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        GoalBank(tiny_model, **kwargs)


def test_unknown_goal(tiny_model):
    with pytest.raises(KeyError, match="close"):
        GoalBank(tiny_model, GOALS).index("the red bal")


def test_goals_the_tokenizer_cannot_tell_apart_are_named(tiny_model):
    long = "go to the red ball " + "and then wait there " * 10  # beyond the 32-token context
    goals = ["the red ball", "The  Red   Ball", long + "for ever", long + "for a while", "the blue key"]
    with pytest.warns(UserWarning, match="cannot tell these goals apart") as record:
        bank = GoalBank(tiny_model, goals, templates=TEMPLATES)
    message = str(record[0].message)
    assert "['the red ball', 'The  Red   Ball']" in message and "for ever" in message and "for a while" in message
    assert "the blue key" not in message
    e = bank.goal_embeddings
    torch.testing.assert_close(e[0], e[1])  # the warning is true: they embed identically
    torch.testing.assert_close(e[2], e[3])
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GoalBank(tiny_model, GOALS, negatives=TASK_SET)  # distinct goals: no warning


def test_template_ensembling_against_plain_torch(tiny_model, tmp_path):
    banks = {rule: GoalBank(tiny_model, GOALS, templates=TEMPLATES, template_ensembling=rule)
             for rule in ("normalized_mean", "mean")}
    for k, s in enumerate(GOALS):
        with torch.no_grad():
            e = tiny_model.model.encode_text(open_clip_tokens([t.format(s) for t in TEMPLATES])).double()
        e = e / e.norm(dim=-1, keepdim=True)
        mean = e.mean(0)  # VLM-RM: the mean of the normalised prompt embeddings
        torch.testing.assert_close(banks["mean"].text_embeddings[k].double(), mean, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(banks["normalized_mean"].text_embeddings[k].double(), mean / mean.norm(),
                                   atol=1e-6, rtol=1e-5)
    assert (banks["mean"].text_embeddings.norm(dim=-1) < 0.999).all()  # not renormalised
    loaded = GoalBank.load(banks["mean"].save(tmp_path / "b.pt"), tiny_model)
    assert loaded.template_ensembling == "mean"
    with pytest.raises(ValueError, match="template_ensembling"):
        GoalBank(tiny_model, GOALS, template_ensembling="max")


def open_clip_tokens(texts):
    import open_clip
    return open_clip.tokenize(texts, context_length=32)
