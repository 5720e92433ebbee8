"""CUDA kernels vs the CPU kernels (skipped without a GPU); build checks that run everywhere."""
import os

import numpy as np
import pytest
import torch

import vlmreward
from vlmreward.ops import CUDA_BUILT

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.skipif(os.environ.get("VLMREWARD_REQUIRE_CUDA", "") not in ("1", "true"),
                    reason="only checked where the build must include CUDA (CI sets VLMREWARD_REQUIRE_CUDA=1)")
def test_cuda_kernels_were_built():
    assert CUDA_BUILT
    assert torch._C._dispatch_has_kernel_for_dispatch_key("vlmreward::preprocess", "CUDA")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("vlmreward::reward_head", "CUDA")


def test_cpu_kernels_registered():
    for op in ("vlmreward::preprocess", "vlmreward::reward_head", "vlmreward::_preprocess_pointwise"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, "CPU")


MEAN, STD = list(vlmreward.OPENAI_CLIP_MEAN), list(vlmreward.OPENAI_CLIP_STD)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def _frames(shape, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8))


def _pointwise(frames, size, mode="shortest", interp="bicubic", dtype=torch.float32):
    """The CUDA kernel's arithmetic run on the CPU: the CUDA output must equal it byte for byte."""
    return torch.ops.vlmreward._preprocess_pointwise(frames.cpu(), size, MEAN, STD, mode, interp, dtype)


@gpu
@pytest.mark.parametrize("shape", [(4, 400, 600), (3, 224, 224), (2, 64, 64), (1, 37, 91), (2, 1000, 50),
                                   (2, 300, 200)])
@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [224, 84])
def test_preprocess_cuda_equals_cpu_emulation(shape, mode, interp, size):
    frames = _frames(shape)
    cuda = vlmreward.preprocess(frames.cuda(), image_size=size, resize_mode=mode, interpolation=interp)
    assert cuda.device.type == "cuda" and cuda.shape == (shape[0], 3, size, size)
    assert torch.equal(cuda.cpu(), _pointwise(frames, size, mode, interp))  # bit-exact (no FMA contraction)
    fast = vlmreward.preprocess(frames, image_size=size, resize_mode=mode, interpolation=interp)
    assert torch.equal(cuda.cpu(), fast)  # and so equal to the fast CPU path


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_preprocess_cuda_every_output_dtype(dtype):
    frames = _frames((3, 120, 160), seed=1)
    cuda = vlmreward.preprocess(frames.cuda(), image_size=84, dtype=dtype)
    assert cuda.dtype == dtype
    assert torch.equal(cuda.cpu(), _pointwise(frames, 84, dtype=dtype))


@gpu
def test_preprocess_cuda_strided_inputs():
    frames = _frames((3, 90, 130), seed=2)
    ref = _pointwise(frames, 84)
    on_device = frames.cuda()
    transposed = on_device.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # non-contiguous view
    assert not transposed.is_contiguous()
    assert torch.equal(vlmreward.preprocess(transposed, image_size=84).cpu(), ref)
    padded = torch.zeros(3, 90, 260, 3, dtype=torch.uint8, device="cuda")
    padded[:, :, ::2] = on_device  # every other column: a strided view of the same frames
    assert torch.equal(vlmreward.preprocess(padded[:, :, ::2], image_size=84).cpu(), ref)
    flipped = np.ascontiguousarray(frames.numpy())[:, ::-1]  # a negative numpy stride, copied by as_frames
    ref_flipped = _pointwise(torch.from_numpy(flipped.copy()), 84)
    out = vlmreward.preprocess(vlmreward.ops.as_frames(flipped).cuda(), image_size=84)
    assert torch.equal(out.cpu(), ref_flipped)


@gpu
def test_preprocess_cuda_side_stream_and_batches_past_the_grid_limit():
    frames = _frames((4, 50, 70), seed=3)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = frames.cuda(non_blocking=False)
        out = vlmreward.preprocess(x, image_size=32)
    side.synchronize()
    assert torch.equal(out.cpu(), _pointwise(frames, 32))
    many = _frames((65_537 + 3, 6, 5), seed=4)  # more frames than a grid's z dimension holds
    out = vlmreward.preprocess(many.cuda(), image_size=4).cpu()
    for idx in (0, 65_535, 65_536, many.shape[0] - 1):
        assert torch.equal(out[idx:idx + 1], _pointwise(many[idx:idx + 1], 4)), idx


@gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs a second CUDA device")
def test_preprocess_and_reward_head_on_a_second_device():
    frames = _frames((2, 64, 96), seed=5)
    out = vlmreward.preprocess(frames.to("cuda:1"), image_size=32)
    assert out.device == torch.device("cuda:1")
    assert torch.equal(out.cpu(), _pointwise(frames, 32))
    image, text, sets = _reward_problem()
    r = vlmreward.reward_head(image.to("cuda:1"), text.to("cuda:1"), sets.to("cuda:1"), logit_scale=100.0,
                              threshold=0.4)
    assert r.probs.device == torch.device("cuda:1")
    cpu = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.4)
    torch.testing.assert_close(r.probs.cpu(), cpu.probs, rtol=2e-4, atol=0)


def _reward_problem(B=64, K=20, D=32, G=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    image, text = torch.randn(B, D, generator=g), torch.randn(K, D, generator=g)
    sets = torch.randint(0, K, (G, 5), generator=g)
    sets[:, -1] = -1
    return image, text, sets


def _reference(image, text, sets, scale):
    """Eq. 1 in float64, written independently of the kernels: probs and cosines (B, G)."""
    x = torch.nn.functional.normalize(image.double(), dim=-1)
    t = torch.nn.functional.normalize(text.double(), dim=-1)
    cos = x @ t.T
    probs = torch.empty(image.shape[0], sets.shape[0], dtype=torch.float64)
    for g in range(sets.shape[0]):
        members = [int(k) for k in sets[g] if k >= 0]
        probs[:, g] = torch.softmax(scale * cos[:, members], dim=-1)[:, 0]
    return probs, cos[:, sets[:, 0]]


@gpu
@pytest.mark.parametrize("with_ids", [False, True])
@pytest.mark.parametrize("mode", ["binary", "probability", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_reward_head_cuda_every_mode(with_ids, mode, dtype):
    image, text, sets = _reward_problem()
    image, text = image.to(dtype), text.to(dtype)
    ids = torch.randint(0, 8, (64,), generator=torch.Generator().manual_seed(1)) if with_ids else None
    cuda = vlmreward.reward_head(image.cuda(), text.cuda(), sets.cuda(), logit_scale=100.0, threshold=0.4,
                                 goal_ids=None if ids is None else ids.cuda(), mode=mode)
    probs, cos = _reference(image, text, sets, 100.0)
    if ids is not None:
        rows = torch.arange(64)
        probs, cos = probs[rows, ids], cos[rows, ids]
    assert cuda.probs.device.type == "cuda" and cuda.probs.shape == probs.shape
    assert ((cuda.probs.cpu().double() - probs).abs() / probs).max() <= 1e-5  # float64 on the GPU
    expected = {"binary": (probs > 0.4).double(), "probability": probs, "cosine": cos}[mode]
    torch.testing.assert_close(cuda.rewards.cpu().double(), expected, rtol=1e-5, atol=1e-6)


@gpu
def test_reward_head_cuda_fallback_path_keeps_tiny_probabilities():
    # Goals far below the frame's best text: the row-max exponentials underflow, the set-max path must not.
    g = torch.Generator().manual_seed(3)
    image, text = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(12, 8, generator=g,
                                                                                   dtype=torch.float64)
    sets = torch.stack([torch.randperm(12, generator=g)[:3] for _ in range(6)])
    out = vlmreward.reward_head(image.cuda(), text.cuda(), sets.cuda(), logit_scale=400.0, threshold=0.5)
    probs, _ = _reference(image, text, sets, 400.0)
    assert probs.min() < 1e-30
    keep = probs > 1e-37
    assert ((out.probs.cpu().double()[keep] - probs[keep]).abs() / probs[keep]).max() <= 1e-5


@gpu
def test_reward_head_cuda_value_errors():
    image, text, sets = (t.cuda() for t in _reward_problem())
    bad = image.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):  # without bank_checked: checked, one sync
        vlmreward.reward_head(bad, text, sets, logit_scale=10.0, threshold=0.5)
    with pytest.raises(ValueError, match="goal_sets entries"):
        vlmreward.reward_head(image, text, torch.tensor([[0, 99]], device="cuda"), logit_scale=10.0, threshold=0.5)
    with pytest.raises(ValueError, match="goal_ids must be in"):
        vlmreward.reward_head(image, text, sets, logit_scale=10.0, threshold=0.5,
                              goal_ids=torch.full((64,), 8, device="cuda"))
    # bank_checked: no sync, so the bad frame is NaN (never a 0/1 reward) and the others are unaffected
    out = vlmreward.reward_head(bad, text, sets, logit_scale=10.0, threshold=0.5, bank_checked=True)
    assert torch.isnan(out.probs[3]).all() and torch.isnan(out.rewards[3]).all()
    ref = vlmreward.reward_head(image, text, sets, logit_scale=10.0, threshold=0.5, bank_checked=True)
    keep = torch.arange(64, device="cuda") != 3
    assert torch.equal(out.probs[keep], ref.probs[keep])
    ids = torch.zeros(64, dtype=torch.int64, device="cuda")
    ids[5] = 99
    out = vlmreward.reward_head(image, text, sets, logit_scale=10.0, threshold=0.5, goal_ids=ids, bank_checked=True)
    assert torch.isnan(out.probs[5]) and not torch.isnan(out.probs[keep]).any()


@gpu
def test_no_host_sync_and_cuda_graph_capture():
    frames = _frames((8, 120, 160), seed=6).cuda()
    image, text, sets = (t.cuda() for t in _reward_problem())
    ids = torch.randint(0, 8, (64,), device="cuda")
    vlmreward.ops.validate_goal_bank(text, sets)

    def step():
        pixels = vlmreward.preprocess(frames, image_size=84)
        a = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.4, bank_checked=True)
        b = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.4, goal_ids=ids,
                                  mode="probability", bank_checked=True)
        return pixels, a.probs, b.rewards

    eager = step()  # warm-up outside the checks (allocator, cuBLAS handles)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        again = step()  # raises on any synchronising call
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for a, b in zip(eager, again):
        assert torch.equal(a, b)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up on the capture stream
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    frames.copy_(_frames((8, 120, 160), seed=7).cuda())  # new inputs, same buffers
    image.mul_(-1.0)
    graph.replay()
    torch.cuda.synchronize()
    expected = step()
    for a, b in zip(captured, expected):
        assert torch.equal(a, b)
    assert not torch.equal(captured[0], eager[0])  # the replay computed on the new frames


@gpu
def test_reward_model_cuda_matches_cpu():
    from vlmreward import GoalBank, RewardModel, load_model

    goals = ["the pole is upright", "the cart is at the left edge", "the cart is at the right edge"]
    frames = _frames((6, 400, 600), seed=8).numpy()
    out = {}
    for device in ("cpu", "cuda"):
        model = load_model("default", device=device)
        bank = GoalBank(model, goals, num_negatives=2, seed=0)
        reward_model = RewardModel(model, bank, threshold=0.5, mode="probability")
        out[device] = reward_model(frames, np.array([0, 1, 2, 0, 1, 2]))
    assert out["cuda"].probs.device.type == "cuda"
    # same pixels (bit-exact preprocess), model arithmetic on another device: probabilities agree closely
    torch.testing.assert_close(out["cuda"].probs.cpu(), out["cpu"].probs, rtol=1e-3, atol=1e-4)


@gpu
def test_mixed_devices_are_refused():
    image = torch.randn(2, 8, device="cuda")
    with pytest.raises(ValueError, match="different devices"):
        vlmreward.reward_head(image, torch.randn(3, 8), torch.tensor([[0, 1]]), logit_scale=1.0, threshold=0.5)
    with pytest.raises(ValueError, match="frames on"):
        vlmreward.fused_reward(np.zeros((1, 8, 8, 3), np.uint8), lambda x: x.flatten(1), torch.randn(3, 192,
                               device="cuda"), torch.tensor([[0, 1]], device="cuda"), logit_scale=1.0, threshold=0.5)
