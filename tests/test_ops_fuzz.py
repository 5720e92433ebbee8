"""Property tests of the kernels over shapes, dtypes and strides (hypothesis)."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vlmreward

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def frame_batches(draw):
    b = draw(st.integers(1, 3))
    h = draw(st.integers(1, 70))
    w = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**31 - 1))
    frames = np.random.default_rng(seed).integers(0, 256, (b, h, w, 3), dtype=np.uint8)
    view = draw(st.sampled_from(["contiguous", "flip_h", "flip_w", "transposed"]))
    if view == "flip_h":
        frames = frames[:, ::-1]
    elif view == "flip_w":
        frames = frames[:, :, ::-1]
    elif view == "transposed":
        frames = np.ascontiguousarray(frames.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    return frames


@SETTINGS
@given(frames=frame_batches(), size=st.integers(1, 48), mode=st.sampled_from(["shortest", "longest", "squash"]),
       interp=st.sampled_from(["bicubic", "bilinear"]), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_preprocess_properties(frames, size, mode, interp, dtype):
    out = vlmreward.preprocess(frames, image_size=size, resize_mode=mode, interpolation=interp, dtype=dtype,
                               mean=(0, 0, 0), std=(1, 1, 1))
    assert out.shape == (frames.shape[0], 3, size, size) and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1  # clipped like Pillow's uint8
    # layout never changes values; the pointwise (CUDA arithmetic) path agrees with the fast path
    contiguous = frames.copy(order="C")
    pointwise = torch.ops.vlmreward._preprocess_pointwise(torch.from_numpy(contiguous), size, [0.0] * 3, [1.0] * 3,
                                                          mode, interp, dtype)
    assert torch.equal(vlmreward.preprocess(contiguous, image_size=size, resize_mode=mode, interpolation=interp,
                                            dtype=dtype, mean=(0, 0, 0), std=(1, 1, 1)), out)
    assert torch.equal(pointwise, out)  # same arithmetic, same order (no FMA contraction on the CPU)


@SETTINGS
@given(frames=frame_batches())
def test_constant_frames_stay_constant(frames):
    value = int(frames[0, 0, 0, 0])
    constant = np.full(frames.shape, value, np.uint8)
    out = vlmreward.preprocess(constant, image_size=17, resize_mode="squash", mean=(0, 0, 0), std=(1, 1, 1))
    assert torch.all((out * 255 - value).abs() < 1e-3)  # weights sum to one


@st.composite
def reward_problems(draw):
    B = draw(st.integers(1, 9))
    K = draw(st.integers(1, 12))
    D = draw(st.integers(1, 20))
    G = draw(st.integers(1, 6))
    N = draw(st.integers(0, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    sets = torch.randint(-1, K, (G, 1 + N), generator=g)
    sets[:, 0] = torch.randint(0, K, (G,), generator=g)
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]))
    image = (torch.randn(B, D, generator=g) + 0.01).to(dtype)
    text = (torch.randn(K, D, generator=g) + 0.01).to(dtype)
    scale = draw(st.floats(0.01, 500.0))
    transpose = draw(st.booleans())
    if transpose:  # non-contiguous embeddings
        image = image.T.contiguous().T
    return image, text, sets, scale


@SETTINGS
@given(problem=reward_problems(), threshold=st.floats(0.0, 1.0), with_ids=st.booleans(), ids_seed=st.integers(0, 99))
def test_reward_head_properties(problem, threshold, with_ids, ids_seed):
    image, text, sets, scale = problem
    if torch.linalg.vector_norm(image.double(), dim=1).min() == 0 or torch.linalg.vector_norm(text.double(), dim=1).min() == 0:
        return
    ids = torch.randint(0, sets.shape[0], (image.shape[0],), generator=torch.Generator().manual_seed(ids_seed)) if with_ids else None
    out = vlmreward.reward_head(image, text, sets, logit_scale=scale, threshold=threshold, goal_ids=ids)
    expected_shape = (image.shape[0],) if with_ids else (image.shape[0], sets.shape[0])
    assert out.probs.shape == expected_shape
    assert torch.all((out.probs >= 0) & (out.probs <= 1))
    # reference: eq. 1 in float64
    x = torch.nn.functional.normalize(image.double(), dim=-1)
    t = torch.nn.functional.normalize(text.double(), dim=-1)
    logits = scale * x @ t.T
    rows = range(image.shape[0])
    for b in rows:
        for c in range(expected_shape[-1] if not with_ids else 1):
            g = int(ids[b]) if with_ids else c
            members = [int(k) for k in sets[g] if k >= 0]
            p = torch.softmax(logits[b, members], 0)[0].item()
            got = out.probs[b].item() if with_ids else out.probs[b, c].item()
            reward = out.rewards[b].item() if with_ids else out.rewards[b, c].item()
            # the precision contract: 1e-5 for float64 inputs, 1e-4 for float32/float16/bfloat16
            assert got == pytest.approx(p, rel=1e-5 if image.dtype == torch.float64 else 1e-4, abs=1e-38)
            if abs(p - threshold) > 1e-9:  # eq. 2 is decided on the float64 probability
                assert reward == float(p > threshold)
