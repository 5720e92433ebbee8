"""The object-relation head: its score against a float64 loop, caption parsing, persistence, the reward path."""
import json
import math

import numpy as np
import pytest
import torch

from vlmreward import GoalBank, RewardModel, load_model
from vlmreward.relation import RelationHead, object_spans, object_token_states, relation_scores

ARCH = "VLMR-ConvMixer-64-2-84-MiniLM"
NOUNS = ["ball", "box", "key", "teapot", "object"]
COLOURS = ["red", "green", "blue", "teal"]


def loop_scores(cells, objects, grid, tau):
    """float64 reference: tau * log sum over ordered 4-adjacent pairs (i, j) of exp((c_i.o1 + c_j.o2) / tau)."""
    c, o = cells.double().numpy(), objects.double().numpy()
    out = np.zeros((len(c), len(o)))
    for b in range(len(c)):
        for k in range(len(o)):
            terms = []
            for i in range(grid * grid):
                ri, ci = divmod(i, grid)
                for j in range(grid * grid):
                    rj, cj = divmod(j, grid)
                    if abs(ri - rj) + abs(ci - cj) == 1:
                        terms.append((c[b, i] @ o[k, 0] + c[b, j] @ o[k, 1]) / tau)
            m = max(terms)
            out[b, k] = tau * (m + math.log(sum(math.exp(t - m) for t in terms)))
    return out


@pytest.mark.parametrize("grid,tau", [(2, 1.0), (3, 0.1), (7, 0.05)])
def test_relation_scores_match_a_float64_loop(grid, tau):
    g = torch.Generator().manual_seed(grid)
    cells = torch.nn.functional.normalize(torch.randn(3, grid * grid, 8, generator=g), dim=-1)
    objects = torch.nn.functional.normalize(torch.randn(5, 2, 8, generator=g), dim=-1)
    got = relation_scores(cells, objects, grid, tau)
    assert got.shape == (3, 5) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), loop_scores(cells, objects, grid, tau), rtol=1e-5, atol=1e-5)
    # the two objects' order does not matter (adjacency is symmetric)
    torch.testing.assert_close(relation_scores(cells, objects.flip(1), grid, tau), got)


def test_relation_scores_find_the_adjacent_pair():
    """Two matching cells side by side score ~2; the same cells apart score less."""
    e = torch.eye(4)
    objects = torch.stack([e[0], e[1]])[None]  # object 1 = direction 0, object 2 = direction 1
    base = e[3].expand(9, 4).clone()
    near, far = base.clone(), base.clone()
    near[0], near[1] = e[0], e[1]  # cells (0, 0) and (0, 1): adjacent
    far[0], far[8] = e[0], e[1]  # cells (0, 0) and (2, 2): not adjacent
    s = relation_scores(torch.stack([near, far]), objects, 3, 0.01)
    assert s[0, 0] == pytest.approx(2.0, abs=1e-3) and s[1, 0] < 1.1
    # at tau 0.001 every product of shifted exponentials of `far` underflows: the logsumexp fallback answers
    tiny = relation_scores(far[None], objects, 3, 0.001)
    np.testing.assert_allclose(tiny.double().numpy(), loop_scores(far[None], objects, 3, 0.001), atol=1e-4)
    assert tiny[0, 0] == pytest.approx(1.0, abs=1e-2)


def test_relation_scores_errors():
    cells, objects = torch.zeros(2, 9, 4), torch.zeros(3, 2, 4)
    for args, match in (((torch.zeros(2, 8, 4), objects, 3, 0.1), "cells"), ((cells, torch.zeros(3, 3, 4), 3, 0.1),
                        "objects"), ((cells, torch.zeros(3, 2, 5), 3, 0.1), "objects"),
                        ((cells, objects, 3, 0.0), "tau")):
        with pytest.raises(ValueError, match=match):
            relation_scores(*args)


@pytest.fixture(scope="module")
def vlm_with_head(tmp_path_factory):
    """A real ConvMixer + MiniLM model (random image weights) with a seeded relation head, saved and reloaded."""
    from vlmreward import models
    torch.manual_seed(0)
    module = models.build_model(ARCH).eval()
    head = RelationHead(NOUNS, COLOURS, grid=7, cell_size=12, dim=16)
    with torch.no_grad():
        head.log_scale.fill_(3.0)
    directory = tmp_path_factory.mktemp("rel")
    models.save_hub_dir(directory, module, models.model_config(ARCH), relation_head=head)
    return load_model(str(directory)), head, directory


def test_object_spans_follow_the_words():
    from vlmreward.models import get_tokenizer
    tok = get_tokenizer(ARCH).tokenizer
    texts = ["put the red key next to the green ball", "next to the green ball, put the red key",
             "the red object and the ball are side by side", "place the teal teapot by the blue box"]
    enc, spans = object_spans(tok, texts, NOUNS, COLOURS, context_length=32)
    assert enc["input_ids"].shape == (4, 32)

    def words(k, positions):
        return tok.convert_tokens_to_string(tok.convert_ids_to_tokens(enc["input_ids"][k, positions].tolist()))
    read = [[(words(k, n), a and words(k, a)) for n, a in s] for k, s in enumerate(spans)]
    assert read == [[("key", "red"), ("ball", "green")], [("ball", "green"), ("key", "red")],
                    [("object", "red"), ("ball", None)], [("teapot", "teal"), ("box", "blue")]]
    assert len(spans[3][0][0]) > 1 and len(spans[3][0][1]) > 1  # "teapot" and "teal": two tokens each
    for bad in ("go to the red key", "put the red key next to the ball by the box", "the sky is blue"):
        with pytest.raises(ValueError, match="names [0-9]+ objects"):
            object_spans(tok, [bad], NOUNS, COLOURS, context_length=32)


def test_object_token_states_are_the_transformer_states(vlm_with_head):
    vlm, _, _ = vlm_with_head
    text, tok = vlm.model.text, vlm.tokenizer.tokenizer
    texts = ["place the teal teapot by the blue box", "put the ball next to the red key"]
    noun, attr, has = object_token_states(text, tok, texts, NOUNS, COLOURS, context_length=32)
    enc, spans = object_spans(tok, texts, NOUNS, COLOURS, context_length=32)
    with torch.no_grad():
        states = text.transformer(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    for k, objs in enumerate(spans):
        for s, (n, a) in enumerate(objs):
            torch.testing.assert_close(noun[k, s], states[k, n].mean(0))
            if a is None:
                assert has[k, s] == 0 and (attr[k, s] == 0).all()
            else:
                torch.testing.assert_close(attr[k, s], states[k, a].mean(0))
                assert has[k, s] == 1
    assert has[1].flatten().tolist() == [0.0, 1.0]


def test_head_saves_and_loads_with_the_model(vlm_with_head, tmp_path):
    vlm, head, directory = vlm_with_head
    assert vlm.relation_head is not None and "+relation:sha256=" in vlm.identity
    for k, v in head.state_dict().items():
        torch.testing.assert_close(vlm.relation_head.state_dict()[k], v)
    config = json.loads((directory / "open_clip_config.json").read_text())
    assert config["vlmreward"]["relation_head"] == head.config
    x = torch.randn(2, 3, 84, 84)
    with torch.no_grad():
        torch.testing.assert_close(vlm.encode_cells(x), head.cells(x))
    assert vlm.encode_objects(["put the red key next to the green ball"]).shape == (1, 2, 16)
    with pytest.raises(ValueError, match="84x84"):
        vlm.encode_cells(torch.randn(1, 3, 80, 80))
    # the saved model round-trips, head included
    again = load_model(str(vlm.save(tmp_path / "again")))
    assert again.identity == vlm.identity  # architecture + weights, wherever the files live
    # broken heads: a clear error each
    (tmp_path / "again" / "relation_head.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(str(tmp_path / "again"))
    (tmp_path / "again" / "relation_head.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="relation_head.safetensors"):
        load_model(str(tmp_path / "again"))
    vlm.save(tmp_path / "bad")
    cfg = json.loads((tmp_path / "bad" / "open_clip_config.json").read_text())
    cfg["vlmreward"]["relation_head"]["dim"] = 8
    (tmp_path / "bad" / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match its config"):
        load_model(str(tmp_path / "bad"))
    del cfg["vlmreward"]["relation_head"]["grid"]
    (tmp_path / "bad" / "open_clip_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="invalid relation head config"):
        load_model(str(tmp_path / "bad"))


PAIRS = ["put the red key next to the green ball", "put the green ball next to the blue box",
         "put the blue box next to the red object", "the teal teapot is beside the red key"]


def frames(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 84, 84, 3), dtype=np.uint8)


def reference_probs(vlm, x, strings, sets):
    """float64 eq. 1 from the head's parts: logits = exp(log_scale) * score, softmax over each goal's set."""
    from vlmreward import preprocess
    head = vlm.relation_head
    with torch.no_grad():
        cells = head.cells(preprocess(torch.from_numpy(x), **vlm.preprocess_kwargs)).double()
        objects = vlm.encode_objects(strings).double()
    logits = math.exp(float(head.log_scale.detach())) * torch.from_numpy(loop_scores(cells, objects, 7, head.tau))
    out = torch.zeros(len(x), len(sets), dtype=torch.float64)
    for g, row in enumerate(sets.tolist()):
        members = [k for k in row if k >= 0]
        out[:, g] = torch.softmax(logits[:, members], 1)[:, 0]
    return out


def test_reward_model_scores_two_object_goals_with_the_head(vlm_with_head):
    vlm, _, _ = vlm_with_head
    bank = GoalBank(vlm, PAIRS)
    rm = RewardModel(vlm, bank, mode="probability")
    assert rm.scorer == "relation" and rm.temperature == pytest.approx(math.exp(-3.0))
    x = frames(3)
    out = rm(x)
    assert out.probs.shape == (3, 4) and out.probs.dtype == torch.float32
    ref = reference_probs(vlm, x, bank.strings, bank.goal_sets.cpu())
    np.testing.assert_allclose(out.probs.double().numpy(), ref.numpy(), atol=2e-5)
    ids = torch.tensor([2, 0, 3])
    torch.testing.assert_close(rm(x, ids).probs, out.probs[torch.arange(3), ids])
    binary = RewardModel(vlm, bank, threshold=float(out.probs.median()))
    torch.testing.assert_close(binary(x).rewards, (out.probs > binary.threshold).float())
    # sampled negatives: each goal against its own fixed set
    sampled = GoalBank(vlm, PAIRS, num_negatives=1, seed=3)
    rs = RewardModel(vlm, sampled, mode="probability")
    ref = reference_probs(vlm, x, sampled.strings, sampled.goal_sets.cpu())
    np.testing.assert_allclose(rs(x).probs.double().numpy(), ref.numpy(), atol=2e-5)
    # templates are ensembled as the bank's text embeddings are: the mean of unit vectors, renormalised
    templated = GoalBank(vlm, PAIRS, templates=("{}", "a room where {}"))
    rt = RewardModel(vlm, templated, mode="probability")
    with torch.no_grad():
        parts = torch.stack([vlm.encode_objects(PAIRS), vlm.encode_objects([f"a room where {p}" for p in PAIRS])])
    torch.testing.assert_close(rt._objects, torch.nn.functional.normalize(parts.mean(0), dim=-1))
    # calibrate reads the same probabilities
    from vlmreward import calibrate_threshold
    labels = (out.probs > out.probs.median()).numpy()
    labels[0, 0] = not labels[0, 0]  # not separable by any threshold
    expected = calibrate_threshold(out.probs.double().numpy().ravel(), labels.ravel(), target="f1")
    assert rm.calibrate(x, labels) == pytest.approx(expected, abs=1e-6)


def test_scorer_choice_and_errors(vlm_with_head):
    vlm, _, _ = vlm_with_head
    one_object = GoalBank(vlm, ["go to the red key", "go to the green ball"])
    assert RewardModel(vlm, one_object).scorer == "embedding"
    mixed = GoalBank(vlm, PAIRS[:2] + ["go to the red key"])
    assert RewardModel(vlm, mixed).scorer == "embedding"
    with pytest.raises(ValueError, match="names 1 objects"):
        RewardModel(vlm, mixed, scorer="relation")
    pairs = GoalBank(vlm, PAIRS)
    assert RewardModel(vlm, pairs, scorer="embedding").scorer == "embedding"
    assert RewardModel(vlm, pairs, mode="cosine").scorer == "embedding"  # auto: cosines need embeddings
    with pytest.raises(ValueError, match="mode must be 'binary' or 'probability'"):
        RewardModel(vlm, pairs, mode="cosine", scorer="relation")
    with pytest.raises(ValueError, match="scorer must be one of"):
        RewardModel(vlm, pairs, scorer="slots")
    plain = load_model("default")
    plain.relation_head = None
    with pytest.raises(ValueError, match="no relation head"):
        RewardModel(plain, GoalBank(plain, PAIRS), scorer="relation")


@pytest.mark.slow
def test_relation_head_training_learns_pickplace_pairs(tmp_path):
    """A short real run of the pretraining stage on PickPlace frames: its reward ranks the frames' own goals
    above chance (AP against scikit-learn's over the training goals of the first 300 frames)."""
    from sklearn.metrics import average_precision_score

    from vlmreward import models
    from vlmreward.pretrain.dataset import DataConfig, generate
    from vlmreward.pretrain.relation import household_vocabulary, train_relation_head
    pp = "vlmreward/PickPlace-v0"
    ds = generate(DataConfig(env_ids=(pp,), episodes=60, max_steps=40, random_states=300), progress=False)
    module = models.build_model(ARCH)
    lines = []
    head = train_relation_head(module, ARCH, ds, seed=0, epochs=3, batch_size=64, log=lines.append)
    assert head is not None and not head.training
    assert head.config["nouns"] == household_vocabulary()[0] and head.config["attributes"] == household_vocabulary()[1]
    assert "training goals" in lines[0] and "step" in lines[-1]
    vlm = models.VisionLanguageModel.of_module(module, ARCH, head)
    cols = [c for c in ds.env_goals[0] if ds.train_goal_mask[c]]
    goals = [ds.goals[c] for c in ds.env_goals[0]]
    rm = RewardModel(vlm, GoalBank(vlm, goals), mode="probability")
    assert rm.scorer == "relation"
    rows = np.arange(300)
    probs = rm(ds.frames[rows]).probs.numpy()
    train_cols = [goals.index(ds.goals[c]) for c in cols]
    y, p = ds.labels[rows][:, cols].ravel(), probs[:, train_cols].ravel()
    assert y.any()
    assert average_precision_score(y, p) > 5 * y.mean(), (average_precision_score(y, p), y.mean())
    # a dataset without two-object goals trains no head
    find = generate(DataConfig(env_ids=("vlmreward/Find-v0",), episodes=2, max_steps=5), progress=False)
    assert train_relation_head(module, ARCH, find) is None


def test_evaluation_scores_with_the_chosen_scorer(vlm_with_head):
    from vlmreward.evaluation import reward_probs
    vlm, _, _ = vlm_with_head
    x = frames(2, seed=1)
    auto = reward_probs(vlm, x, PAIRS, negatives=PAIRS, num_negatives=None)
    relation = RewardModel(vlm, GoalBank(vlm, PAIRS), mode="probability", scorer="relation")(x).probs
    np.testing.assert_allclose(auto, relation.double().numpy(), atol=1e-6)
    embedding = reward_probs(vlm, x, PAIRS, negatives=PAIRS, num_negatives=None, scorer="embedding")
    plain = RewardModel(vlm, GoalBank(vlm, PAIRS), mode="probability", scorer="embedding")(x).probs
    np.testing.assert_allclose(embedding, plain.double().numpy(), atol=1e-6)
    assert np.abs(auto - embedding).max() > 1e-3  # two different scorers


@pytest.mark.slow
def test_pretrain_trains_exports_and_reloads_the_head(tmp_path):
    """`vlmreward pretrain --init DIR --epochs 0`: the relation head alone on a warm-started model; the export
    holds it, loads through load_model, records the init model's recipe, and validation scores PickPlace with it."""
    from vlmreward import models
    from vlmreward.pretrain.dataset import DataConfig, generate
    from vlmreward.pretrain.train import PretrainConfig, train
    pp = "vlmreward/PickPlace-v0"
    ds = generate(DataConfig(env_ids=(pp,), episodes=20, max_steps=30, random_states=200), progress=False)
    val = generate(DataConfig(env_ids=(pp,), episodes=6, max_steps=30, split="val"), progress=False)
    init = tmp_path / "init"
    models.save_hub_dir(init, models.build_model(ARCH), models.model_config(ARCH))
    (init / "RECIPE.json").write_text(json.dumps({"command": "the init model's own recipe"}))
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train(PretrainConfig(model=ARCH, epochs=0, out=str(tmp_path / "x"), progress=False), train_ds=ds, val_ds=val)
    cfg = PretrainConfig(model=ARCH, epochs=0, init=str(init), out=str(tmp_path / "run"),
                         export=str(tmp_path / "export"),
                         progress=False, threads=2, relation_hard_negatives=2)
    res = train(cfg, train_ds=ds, val_ds=val)
    assert res["history"] == [] and res["relation_head"]["val"]["PickPlace"]["ap_train"] >= 0
    recipe = json.loads((tmp_path / "export" / "RECIPE.json").read_text())
    assert recipe["init_recipe"] == {"command": "the init model's own recipe"}
    assert recipe["relation_head"]["val"] == res["relation_head"]["val"]
    vlm = load_model(str(tmp_path / "export"))
    assert vlm.relation_head is not None
    rm = RewardModel(vlm, GoalBank(vlm, [ds.goals[c] for c in ds.env_goals[0]]), mode="probability")
    assert rm.scorer == "relation" and rm(ds.frames[:3]).probs.shape == (3, len(ds.env_goals[0]))
    # the CLIP weights are the init model's, untouched
    from safetensors.torch import load_file
    a = load_file(str(init / "open_clip_model.safetensors"))
    b = load_file(str(tmp_path / "export" / "open_clip_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
