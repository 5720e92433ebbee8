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


@gpu
@pytest.mark.parametrize("shape", [(4, 400, 600), (3, 224, 224), (2, 64, 64), (1, 37, 91)])
@pytest.mark.parametrize("mode", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_preprocess_cuda_matches_cpu(shape, mode, interp):
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8))
    cpu = torch.ops.vlmreward._preprocess_pointwise(frames, 224, list(vlmreward.OPENAI_CLIP_MEAN),
                                                    list(vlmreward.OPENAI_CLIP_STD), mode, interp, torch.float32)
    cuda = vlmreward.preprocess(frames.cuda(), resize_mode=mode, interpolation=interp)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1.01 / 255 / 0.26, rtol=0)  # one uint8 step, FMA rounding
    fast = vlmreward.preprocess(frames, resize_mode=mode, interpolation=interp)
    assert ((cuda.cpu() - fast).abs() * 255 * 0.26).max() <= 1.01


@gpu
@pytest.mark.parametrize("with_ids", [False, True])
def test_reward_head_cuda_matches_cpu(with_ids):
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(64, 32, generator=g), torch.randn(20, 32, generator=g)
    sets = torch.randint(0, 20, (8, 5), generator=g)
    sets[:, -1] = -1
    ids = torch.randint(0, 8, (64,), generator=g) if with_ids else None
    cpu = vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.4, goal_ids=ids)
    cuda = vlmreward.reward_head(image.cuda(), text.cuda(), sets.cuda(), logit_scale=100.0, threshold=0.4,
                                 goal_ids=None if ids is None else ids.cuda())
    torch.testing.assert_close(cuda.probs.cpu(), cpu.probs, rtol=1e-5, atol=1e-7)
    assert torch.equal(cuda.rewards.cpu(), cpu.rewards)


@gpu
def test_mixed_devices_are_refused():
    image = torch.randn(2, 8, device="cuda")
    with pytest.raises(ValueError, match="different devices"):
        vlmreward.reward_head(image, torch.randn(3, 8), torch.tensor([[0, 1]]), logit_scale=1.0, threshold=0.5)
    with pytest.raises(ValueError, match="frames on"):
        vlmreward.fused_reward(np.zeros((1, 8, 8, 3), np.uint8), lambda x: x.flatten(1), torch.randn(3, 192,
                               device="cuda"), torch.tensor([[0, 1]], device="cuda"), logit_scale=1.0, threshold=0.5)
