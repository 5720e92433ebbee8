"""Python face of the fused kernels: :func:`preprocess`, :func:`reward_head`, :func:`fused_reward`.

The kernels live in the C++/CUDA extension ``vlmreward._C`` and are registered with torch's dispatcher as
``torch.ops.vlmreward.preprocess`` and ``torch.ops.vlmreward.reward_head`` (CPU and CUDA implementations of
one schema each, plus fake kernels below so they trace under ``torch.compile``).
"""
from __future__ import annotations

import warnings
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

try:
    from vlmreward import _C  # noqa: F401  (registers torch.ops.vlmreward.*)
except ImportError as e:  # pragma: no cover - a broken install
    raise ImportError(f"vlmreward's compiled kernels (vlmreward._C) failed to load: {e}. Reinstall with "
                      "`pip install .` using the same torch version the package pins.") from e

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest", "squash")
INTERPOLATIONS = ("bicubic", "bilinear")
REWARD_MODES = ("binary", "probability", "cosine")

CUDA_BUILT: bool = bool(_C.cuda_built)


class RewardOutput(NamedTuple):
    """Output of the reward head. Both float32, shape (B, G) for all goals or (B,) with ``goal_ids``.

    probs: p(goal | observation), Baumli et al. eq. 1. rewards: the reward of the chosen mode (eq. 2 for
    "binary": 1.0 where probs > threshold, else 0.0).
    """

    probs: torch.Tensor
    rewards: torch.Tensor


def as_frames(frames) -> torch.Tensor:
    """uint8 frames as a (B, H, W, 3) torch tensor (no copy when possible).

    Accepts numpy arrays or tensors of shape (B, H, W, 3) or (H, W, 3). Numpy arrays with negative or
    otherwise non-contiguous strides (e.g. ``frame[:, ::-1]``) are copied once; that is the documented
    handling, the kernels themselves read contiguous frames.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise TypeError(f"frames must be uint8 RGB images, got numpy dtype {frames.dtype}")
        if not frames.flags.c_contiguous or any(s < 0 for s in frames.strides):  # numpy calls a size-1 axis
            frames = frames.copy(order="C")  # with a negative stride contiguous; torch refuses it
        with warnings.catch_warnings():  # read-only arrays are fine: the kernels never write to frames
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            frames = torch.from_numpy(frames)
    elif isinstance(frames, (list, tuple)):
        if not frames:
            raise ValueError("frames: empty batch (B = 0)")
        return as_frames(np.stack([np.asarray(f) for f in frames]))
    elif not isinstance(frames, torch.Tensor):
        raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    if frames.dim() == 3:
        frames = frames.unsqueeze(0)
    return frames


def preprocess(frames, *, image_size: int = 224, mean: Sequence[float] = OPENAI_CLIP_MEAN,
               std: Sequence[float] = OPENAI_CLIP_STD, resize_mode: str = "shortest",
               interpolation: str = "bicubic", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resize, crop/pad and normalise uint8 frames into a CLIP model's input, in one fused pass.

    Reproduces open_clip's inference transform (``open_clip.image_transform``, PIL backend) for the given
    config: ``resize_mode`` "shortest" (shorter side to ``image_size``, centre crop; open_clip's default),
    "longest" (longer side to ``image_size``, centre pad with pixel value 0) or "squash" (both sides to
    ``image_size``); ``interpolation`` "bicubic" or "bilinear", antialiased as Pillow does when
    downscaling; then ``(x / 255 - mean) / std``. Matches PIL within 1/255 per pixel in tests.

    Args:
        frames: uint8 RGB, (B, H, W, 3) or (H, W, 3), numpy array or torch tensor on CPU or CUDA, any H, W.
        image_size: output side S in pixels.
        mean, std: per-channel normalisation, 3 floats each (std > 0).
        resize_mode, interpolation: as above.
        dtype: output dtype: float32, float16, bfloat16 or float64.

    Returns:
        Tensor (B, 3, S, S) of ``dtype`` on the frames' device.

    Raises:
        TypeError: frames not uint8 / not an array, or an unsupported dtype.
        ValueError: wrong rank or channel count, empty batch, bad mode, interpolation, mean or std.
    """
    x = as_frames(frames)
    return torch.ops.vlmreward.preprocess(x, int(image_size), [float(m) for m in mean], [float(s) for s in std],
                                          resize_mode, interpolation, dtype)


def reward_head(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, goal_sets: torch.Tensor, *,
                logit_scale: float, threshold: float, goal_ids: torch.Tensor | None = None,
                mode: str = "binary") -> RewardOutput:
    """Probabilities and rewards of goals from image embeddings and a cached goal bank, fused.

    Implements Baumli et al. (arXiv 2312.09187) eq. 1, ``p(l|o) = softmax_{l' in L}(logit_scale *
    cos(f(o), g(l')))`` at the goal l, with L = the goal's row of ``goal_sets``, and eq. 2,
    ``r = 1[p > threshold]``. Cosines and the softmax are computed in float64.

    Args:
        image_embeddings: (B, D) float32/float16/bfloat16/float64, unnormalised image embeddings f(o).
        text_embeddings: (K, D) floating, embeddings of every goal and negative (normalised here).
        goal_sets: (G, 1 + N) int64; row g = [index of goal g, indices of its N negatives] into
            ``text_embeddings``; -1 pads rows with fewer negatives.
        logit_scale: 1 / temperature (> 0); for CLIP, ``model.logit_scale.exp()`` (100 for OpenAI CLIP).
        threshold: beta of eq. 2 (rewards are 1.0 where probs > threshold, strictly).
        goal_ids: optional (B,) int64; row b is scored against goal ``goal_ids[b]`` only.
        mode: "binary" (eq. 2), "probability" (rewards = probs) or "cosine" (rewards = cos(image, goal)).

    Returns:
        RewardOutput(probs, rewards), float32, (B, G), or (B,) with ``goal_ids``, on the inputs' device.

    Raises:
        TypeError: non-floating embeddings, non-int64 goal_sets/goal_ids.
        ValueError: shape or D mismatch, empty batch, indices out of range, NaN/Inf or zero embeddings,
            tensors on different devices, bad logit_scale/threshold/mode.
    """
    probs, rewards = torch.ops.vlmreward.reward_head(image_embeddings, text_embeddings, goal_sets,
                                                     float(logit_scale), float(threshold), goal_ids, mode)
    return RewardOutput(probs, rewards)


def fused_reward(frames, encode_image: Callable[[torch.Tensor], torch.Tensor], text_embeddings: torch.Tensor,
                 goal_sets: torch.Tensor, *, logit_scale: float, threshold: float,
                 goal_ids: torch.Tensor | None = None, mode: str = "binary", **preprocess_kwargs) -> RewardOutput:
    """Rewards straight from uint8 frames: :func:`preprocess` -> ``encode_image`` -> :func:`reward_head`.

    Runs under ``torch.inference_mode()``. ``encode_image`` is any callable mapping (B, 3, S, S) pixels to
    (B, D) embeddings, e.g. an open_clip model's ``encode_image``. The frames must be on the device of
    ``text_embeddings`` (the model's device). ``preprocess_kwargs`` go to :func:`preprocess` (image_size,
    mean, std, resize_mode, interpolation, dtype); other arguments as in :func:`reward_head`.

    Returns:
        RewardOutput of (B, G) or (B,) float32 tensors.

    Raises:
        ValueError / TypeError as :func:`preprocess` and :func:`reward_head`, and ValueError when frames and
        text embeddings are on different devices.
    """
    x = as_frames(frames)
    if x.device != text_embeddings.device:
        raise ValueError(f"fused_reward: frames on {x.device} but text_embeddings on {text_embeddings.device}; "
                         "move the frames to the model's device")
    with torch.inference_mode():
        pixels = preprocess(x, **preprocess_kwargs)
        image_embeddings = encode_image(pixels)
        return reward_head(image_embeddings, text_embeddings, goal_sets, logit_scale=logit_scale,
                           threshold=threshold, goal_ids=goal_ids, mode=mode)


# Shape functions for torch.compile / FakeTensor tracing.
@torch.library.register_fake("vlmreward::preprocess")
def _preprocess_fake(frames, image_size, mean, std, resize_mode, interpolation, dtype):
    return frames.new_empty((frames.shape[0], 3, image_size, image_size), dtype=dtype)


@torch.library.register_fake("vlmreward::reward_head")
def _reward_head_fake(image_embeddings, text_embeddings, goal_sets, logit_scale, threshold, goal_ids, mode):
    shape = (image_embeddings.shape[0],) if goal_ids is not None else (image_embeddings.shape[0], goal_sets.shape[0])
    out = image_embeddings.new_empty(shape, dtype=torch.float32)
    return out, torch.empty_like(out)
