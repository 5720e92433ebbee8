"""reward_head vs the paper's equations written in plain float64 torch; fused_reward end to end."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlmreward


def reference(image, text, goal_sets, logit_scale, threshold, goal_ids=None):
    """Baumli et al. eq. 1-2 in float64, written independently of the kernel."""
    x = F.normalize(image.double(), dim=-1)
    t = F.normalize(text.double(), dim=-1)
    logits = logit_scale * x @ t.T  # (B, K)
    B, G = x.shape[0], goal_sets.shape[0]
    probs = torch.empty(B, G, dtype=torch.float64)
    cos_goal = torch.empty(B, G, dtype=torch.float64)
    for g in range(G):
        members = [int(k) for k in goal_sets[g] if k >= 0]
        probs[:, g] = torch.softmax(logits[:, members], dim=-1)[:, 0]
        cos_goal[:, g] = logits[:, members[0]] / logit_scale
    if goal_ids is not None:
        rows = torch.arange(B)
        probs, cos_goal = probs[rows, goal_ids], cos_goal[rows, goal_ids]
    return probs, (probs > threshold).double(), cos_goal


def random_problem(B=7, K=9, D=16, G=5, N=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(B, D, generator=g).to(dtype)
    text = torch.randn(K, D, generator=g).to(dtype)
    sets = torch.stack([torch.randperm(K, generator=g)[:1 + N] for _ in range(G)])
    return image, text, sets


# Precision contract of reward_head (docs/kernels.md): relative error of p against float64 math <= 1e-4 for
# float32/float16/bfloat16 inputs, <= 1e-5 for float64 inputs.
F32_TOL, F64_TOL = 1e-4, 1e-5


def rel_err(a, b):
    return ((a.double() - b).abs() / b.abs().clamp_min(1e-300)).max().item()


@pytest.mark.parametrize("logit_scale", [1.0, 14.3, 100.0])
def test_all_goals_match_reference(logit_scale):
    image, text, sets = random_problem()
    out = vlmreward.reward_head(image, text, sets, logit_scale=logit_scale, threshold=0.3)
    probs, rewards, _ = reference(image, text, sets, logit_scale, 0.3)
    assert out.probs.shape == out.rewards.shape == (7, 5)
    assert out.probs.dtype == out.rewards.dtype == torch.float32
    assert rel_err(out.probs, probs) <= F32_TOL
    assert torch.equal(out.rewards.double(), rewards)


def test_tiny_probabilities_keep_relative_precision():
    # Goals far below the frame's best text: the row-max fast path underflows, the set-max path must not.
    image, text, sets = random_problem(B=4, K=12, D=8, G=6, N=2, seed=3)
    out = vlmreward.reward_head(image, text, sets, logit_scale=400.0, threshold=0.5)
    probs, _, _ = reference(image, text, sets, 400.0, 0.5)
    assert probs.min() < 1e-30  # the case is exercised
    nonzero = probs > 1e-37  # float32 output range
    assert rel_err(out.probs[nonzero], probs[nonzero]) <= F32_TOL


def test_padding_rows():
    image, text, _ = random_problem(K=6)
    sets = torch.tensor([[0, 1, 2, 3], [4, 5, -1, -1], [2, -1, -1, -1], [3, -1, 0, -1]])
    out = vlmreward.reward_head(image, text, sets, logit_scale=50.0, threshold=0.5)
    probs, _, _ = reference(image, text, sets, 50.0, 0.5)
    assert rel_err(out.probs, probs) <= F32_TOL
    assert torch.all(out.probs[:, 2] == 1.0)  # a goal without negatives is certain


def test_goal_ids_and_modes():
    image, text, sets = random_problem(B=11)
    ids = torch.randint(0, sets.shape[0], (11,), generator=torch.Generator().manual_seed(1))
    probs, rewards, cos = reference(image, text, sets, 100.0, 0.2, goal_ids=ids)
    out = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.2, goal_ids=ids)
    assert out.probs.shape == (11,)
    assert rel_err(out.probs, probs) <= F32_TOL and torch.equal(out.rewards.double(), rewards)
    p = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.2, goal_ids=ids, mode="probability")
    assert torch.equal(p.rewards, p.probs)
    c = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.2, goal_ids=ids, mode="cosine")
    torch.testing.assert_close(c.rewards.double(), cos, atol=1e-6, rtol=0)


def test_ties_at_threshold_give_no_reward():
    # Two identical texts in a set: the goal's probability is exactly 1/2; eq. 2 is a strict inequality.
    image = torch.randn(3, 8)
    text = torch.randn(2, 8)
    text = torch.cat([text[:1], text[:1], text[1:]])
    sets = torch.tensor([[0, 1]])
    out = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.5)
    assert torch.all(out.probs == 0.5) and torch.all(out.rewards == 0.0)
    below = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.4999)
    assert torch.all(below.rewards == 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    image, text, sets = random_problem(dtype=dtype)
    out = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.5)
    probs, _, _ = reference(image, text, sets, 100.0, 0.5)  # reference on the same rounded inputs
    assert rel_err(out.probs, probs) <= F32_TOL


def test_unnormalised_text_is_normalised():
    image, text, sets = random_problem()
    a = vlmreward.reward_head(image, text, sets, logit_scale=30.0, threshold=0.5)
    b = vlmreward.reward_head(image * 7.0, F.normalize(text, dim=-1) * 0.01, sets, logit_scale=30.0, threshold=0.5)
    torch.testing.assert_close(a.probs, b.probs, atol=1e-6, rtol=1e-5)


def _bad(**changes):
    image, text, sets = random_problem()
    kw = dict(image_embeddings=image, text_embeddings=text, goal_sets=sets, logit_scale=100.0, threshold=0.5)
    kw.update(changes)
    return kw


@pytest.mark.parametrize("changes, error, match", [
    (dict(image_embeddings=torch.randn(7, 15)), ValueError, "embedding sizes differ"),
    (dict(image_embeddings=torch.randn(0, 16)), ValueError, "empty batch"),
    (dict(image_embeddings=torch.randn(16)), ValueError, "\\(B, D\\)"),
    (dict(image_embeddings=torch.ones(7, 16, dtype=torch.int32)), TypeError, "float"),
    (dict(goal_sets=torch.tensor([[0, 9]])), ValueError, "goal_sets entries"),
    (dict(goal_sets=torch.tensor([[-1, 2]])), ValueError, "goal_sets entries"),
    (dict(goal_sets=torch.tensor([[0, 1]], dtype=torch.int32)), TypeError, "int64"),
    (dict(image_embeddings=torch.full((7, 16), float("nan"))), ValueError, "NaN"),
    (dict(text_embeddings=torch.zeros(9, 16)), ValueError, "all-zero"),
    (dict(logit_scale=0.0), ValueError, "logit_scale"),
    (dict(logit_scale=float("inf")), ValueError, "logit_scale"),
    (dict(threshold=float("nan")), ValueError, "threshold"),
    (dict(goal_ids=torch.tensor([0] * 6)), ValueError, "goal_ids must be \\(B,\\)"),
    (dict(goal_ids=torch.tensor([5] * 7)), ValueError, "goal_ids must be in"),
    (dict(goal_ids=torch.zeros(7)), TypeError, "int64"),
    (dict(mode="log"), ValueError, "mode"),
])
def test_bad_input(changes, error, match):
    kw = _bad(**changes)
    with pytest.raises(error, match=match):
        vlmreward.reward_head(kw.pop("image_embeddings"), kw.pop("text_embeddings"), kw.pop("goal_sets"), **kw)


def test_fused_reward_equals_composition():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 120, 90, 3), dtype=np.uint8)
    proj = torch.randn(3 * 32 * 32, 24, generator=torch.Generator().manual_seed(0))

    def encode_image(pixels):
        assert not torch.is_grad_enabled()
        return pixels.flatten(1) @ proj

    _, text, sets = random_problem(K=9, D=24)
    out = vlmreward.fused_reward(frames, encode_image, text, sets, logit_scale=10.0, threshold=0.4, image_size=32,
                                 resize_mode="squash")
    with torch.no_grad():
        emb = encode_image(vlmreward.preprocess(frames, image_size=32, resize_mode="squash"))
    ref = vlmreward.reward_head(emb, text, sets, logit_scale=10.0, threshold=0.4)
    assert torch.equal(out.probs, ref.probs) and torch.equal(out.rewards, ref.rewards)


def test_ops_trace_under_torch_compile():
    image, text, sets = random_problem()
    frames = torch.randint(0, 256, (2, 40, 50, 3), dtype=torch.uint8)

    def f(frames, image, text, sets):
        pixels = torch.ops.vlmreward.preprocess(frames, 16, [0.5] * 3, [0.25] * 3, "shortest", "bicubic",
                                                torch.float32)
        probs, rewards = torch.ops.vlmreward.reward_head(image, text, sets, 100.0, 0.5, None, "binary")
        return pixels.sum(), probs, rewards

    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:  # shape propagation through the registered fake kernels
        fake = f(*(mode.from_tensor(t) for t in (frames, image, text, sets)))
        assert fake[1].shape == (7, 5)
    compiled = torch.compile(f, backend="eager", fullgraph=True)
    eager = f(frames, image, text, sets)
    for a, b in zip(compiled(frames, image, text, sets), eager):
        assert torch.equal(a, b)


def test_precision_contract_at_clip_sizes():
    # D = 512, logit_scale 100 (OpenAI CLIP): float32 inputs <= 1e-4, float64 inputs <= 1e-5 relative error of p
    # against eq. 1 in float64 (the documented contract).
    image, text, sets = random_problem(B=64, K=40, D=512, G=40, N=39, seed=5)
    ids = torch.randint(0, 40, (64,), generator=torch.Generator().manual_seed(2))
    for dtype, tol in ((torch.float32, F32_TOL), (torch.float64, F64_TOL)):
        for goal_ids in (None, ids):
            out = vlmreward.reward_head(image.to(dtype), text.to(dtype), sets, logit_scale=100.0, threshold=0.5,
                                        goal_ids=goal_ids)
            probs, _, _ = reference(image.to(dtype), text.to(dtype), sets, 100.0, 0.5, goal_ids=goal_ids)
            assert probs.min() < 1e-6  # the softmax is far from uniform: errors of logits show
            assert rel_err(out.probs, probs) <= tol, (dtype, goal_ids is None)


def test_float64_inputs_keep_1e5():
    image, text, sets = random_problem(B=9, K=12, D=32, G=6, N=5, seed=7, dtype=torch.float64)
    for scale in (0.5, 100.0, 450.0):
        out = vlmreward.reward_head(image, text, sets, logit_scale=scale, threshold=0.5)
        probs, _, _ = reference(image, text, sets, scale, 0.5)
        keep = probs > 1e-37
        assert rel_err(out.probs[keep], probs[keep]) <= F64_TOL


def test_bank_checked_gives_the_same_answers():
    image, text, sets = random_problem(B=5)
    vlmreward.ops.validate_goal_bank(text, sets)
    for ids in (None, torch.tensor([0, 1, 2, 3, 4])):
        a = vlmreward.reward_head(image, text, sets, logit_scale=50.0, threshold=0.4, goal_ids=ids)
        b = vlmreward.reward_head(image, text, sets, logit_scale=50.0, threshold=0.4, goal_ids=ids, bank_checked=True)
        assert torch.equal(a.probs, b.probs) and torch.equal(a.rewards, b.rewards)
    # on the CPU the per-call checks still run with bank_checked
    with pytest.raises(ValueError, match="goal_sets entries"):
        vlmreward.reward_head(image, text, torch.tensor([[0, 99]]), logit_scale=1.0, threshold=0.5, bank_checked=True)


@pytest.mark.parametrize("text, sets, error, match", [
    (torch.zeros(3, 4), torch.tensor([[0, 1]]), ValueError, "all-zero"),
    (torch.full((3, 4), float("inf")), torch.tensor([[0, 1]]), ValueError, "NaN/Inf"),
    (torch.randn(3, 4), torch.tensor([[0, 3]]), ValueError, "goal_sets entries"),
    (torch.randn(3, 4), torch.tensor([[-1, 1]]), ValueError, "goal_sets entries"),
    (torch.randn(3, 4), torch.tensor([[0, 1]], dtype=torch.int32), TypeError, "int64"),
    (torch.randn(3, 4, dtype=torch.float64).to(torch.int64), torch.tensor([[0, 1]]), TypeError, "float"),
])
def test_validate_goal_bank_rejects(text, sets, error, match):
    with pytest.raises(error, match=match):
        vlmreward.ops.validate_goal_bank(text, sets)


def test_meta_device_inputs_are_refused_like_other_devices():
    image, text, sets = random_problem()
    for args in ((image.to("meta"), text, sets), (image, text.to("meta"), sets), (image, text, sets.to("meta"))):
        with pytest.raises(ValueError, match="different devices"):
            vlmreward.reward_head(*args, logit_scale=10.0, threshold=0.5)
    with pytest.raises(ValueError, match="goal_ids on"):
        vlmreward.reward_head(image, text, sets, logit_scale=10.0, threshold=0.5,
                              goal_ids=torch.zeros(7, dtype=torch.int64, device="meta"))
    out = vlmreward.reward_head(image.to("meta"), text.to("meta"), sets.to("meta"), logit_scale=10.0, threshold=0.5)
    assert out.probs.device.type == "meta" and out.probs.shape == (7, 5)


@pytest.mark.parametrize("changes, error, match", [
    (dict(image_embeddings=torch.randn(7, 15)), ValueError, "embedding sizes differ"),
    (dict(image_embeddings=torch.randn(0, 16)), ValueError, "empty batch"),
    (dict(image_embeddings=torch.ones(7, 16, dtype=torch.int32)), TypeError, "float"),
    (dict(goal_sets=torch.tensor([[0, 1]], dtype=torch.int32)), TypeError, "int64"),
    (dict(logit_scale=0.0), ValueError, "logit_scale"),
    (dict(goal_ids=torch.tensor([0] * 6)), ValueError, "goal_ids must be \\(B,\\)"),
    (dict(mode="log"), ValueError, "mode"),
])
def test_fake_kernel_checks_like_the_real_one(changes, error, match):
    from torch._subclasses.fake_tensor import FakeTensorMode
    kw = _bad(**changes)
    kw.setdefault("goal_ids", None)
    kw.setdefault("mode", "binary")
    with FakeTensorMode() as mode:
        fake = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        with pytest.raises(error, match=match):
            torch.ops.vlmreward.reward_head(fake["image_embeddings"], fake["text_embeddings"], fake["goal_sets"],
                                            fake["logit_scale"], fake["threshold"], fake["goal_ids"], fake["mode"])
