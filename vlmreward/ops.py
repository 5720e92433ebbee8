"""Python face of the fused kernels: ``preprocess``, ``reward_head``, ``fused_reward``.

TEMPORARY: pure-torch bodies until the C++ kernels land (same signatures and semantics).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
REWARD_MODES = ("binary", "probability", "cosine")


class RewardOutput(NamedTuple):
    probs: torch.Tensor
    rewards: torch.Tensor


def as_frames(frames) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    return frames


def preprocess(frames, *, image_size=224, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
               resize_mode="shortest", interpolation="bicubic", dtype=torch.float32):
    x = as_frames(frames).permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    if resize_mode == "squash":
        x = F.interpolate(x, size=(image_size, image_size), mode=interpolation, antialias=True)
    else:
        s = image_size / min(h, w)
        x = F.interpolate(x, size=(max(1, round(h * s)), max(1, round(w * s))), mode=interpolation, antialias=True)
        t = (x.shape[-2] - image_size) // 2
        l = (x.shape[-1] - image_size) // 2
        x = x[..., t:t + image_size, l:l + image_size]
    x = x.clamp(0, 255) / 255
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    sd = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / sd).to(dtype)


def reward_head(image_embeddings, text_embeddings, goal_sets, *, logit_scale, threshold, goal_ids=None,
                mode="binary"):
    x = F.normalize(image_embeddings.double(), dim=-1)
    t = F.normalize(text_embeddings.double(), dim=-1)
    cos = x @ t.T  # (B,K)
    sets = goal_sets if goal_ids is None else goal_sets[goal_ids]
    valid = sets >= 0
    idx = sets.clamp_min(0)
    if goal_ids is None:
        logits = float(logit_scale) * cos[:, idx]  # (B,G,1+N)
        logits = logits.masked_fill(~valid, float("-inf"))
        probs = logits.softmax(-1)[..., 0]
        cg = cos[:, idx[:, 0]]
    else:
        logits = float(logit_scale) * torch.gather(cos, 1, idx)
        logits = logits.masked_fill(~valid, float("-inf"))
        probs = logits.softmax(-1)[:, 0]
        cg = torch.gather(cos, 1, idx[:, :1])[:, 0]
    rewards = {"binary": (probs > threshold).double(), "probability": probs, "cosine": cg}[mode]
    return RewardOutput(probs.float(), rewards.float())


@torch.inference_mode()
def fused_reward(frames, encode_image: Callable, text_embeddings, goal_sets, *, logit_scale, threshold,
                 goal_ids=None, mode="binary", **preprocess_kwargs):
    pixels = preprocess(frames, **preprocess_kwargs)
    emb = encode_image(pixels)
    return reward_head(emb, text_embeddings.to(emb.device), goal_sets.to(emb.device), logit_scale=logit_scale,
                       threshold=threshold, goal_ids=None if goal_ids is None else goal_ids.to(emb.device),
                       mode=mode)
