"""Shared fixtures: a small real open_clip model with random weights, saved in open_clip's hub layout."""
import json
import math
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

# A genuine open_clip CLIP (ViT image tower + transformer text tower with the OpenAI BPE tokenizer), small
# enough to build in well under a second.
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_PREPROCESS_CFG = {"size": 64, "mean": [0.48145466, 0.4578275, 0.40821073],
                       "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic",
                       "resize_mode": "shortest"}
TINY_ARCH = "vlmreward-test-tiny"


class RecordingRewardModel:
    """A real RewardModel that keeps what it was called with: ``calls`` [(frames, goal_ids)], ``frames``."""

    def __init__(self, model):
        self.inner, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @property
    def frames(self):
        return _FrameLog(self.calls)

    def __call__(self, frames, goal_ids=None):
        self.calls.append((np.array(frames), None if goal_ids is None else np.array(goal_ids)))
        return self.inner(frames, goal_ids)


class _FrameLog(list):
    """The frames of each call (a view that can also be cleared, clearing the calls)."""

    def __init__(self, calls):
        super().__init__(f for f, _ in calls)
        self._calls = calls

    def clear(self):
        super().clear()
        self._calls.clear()


def build_tiny_clip(seed=0, logit_scale=100.0):
    """A random-weight open_clip ``CLIP`` of TINY_CLIP_CFG (seeded); logit_scale set so that probabilities
    spread (random towers give near-uniform softmaxes at CLIP's initial 1/0.07)."""
    import open_clip
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(logit_scale))
    return model.eval()


def save_hub_layout(model, directory, *, preprocess_cfg=None, model_cfg=None, fmt="safetensors"):
    """Write ``model`` in open_clip's hub layout, independently of vlmreward's own writer."""
    from safetensors.torch import save_file
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg or TINY_CLIP_CFG, "preprocess_cfg": preprocess_cfg or TINY_PREPROCESS_CFG}))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if fmt == "safetensors":
        save_file(state, str(directory / "open_clip_model.safetensors"))
    else:
        torch.save(state, directory / "open_clip_pytorch_model.bin")
    return directory


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory):
    """Registers TINY_CLIP_CFG with open_clip under TINY_ARCH and returns that name."""
    import open_clip
    path = tmp_path_factory.mktemp("model_configs") / f"{TINY_ARCH}.json"
    path.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(path)
    return TINY_ARCH


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """Path of a directory in open_clip's hub layout holding a tiny random-weight CLIP (64x64 input, D=32)."""
    return save_hub_layout(build_tiny_clip(), tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_model(tiny_clip_dir):
    """``vlmreward.load_model(tiny_clip_dir)`` (CPU, fp32)."""
    from vlmreward.models import load_model
    return load_model(str(tiny_clip_dir))
