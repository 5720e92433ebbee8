"""Python face of the fused kernels: :func:`preprocess`, :func:`reward_head`, :func:`fused_reward`.

The kernels live in the C++/CUDA extension ``vlmreward._C`` and are registered with torch's dispatcher as
``torch.ops.vlmreward.preprocess`` and ``torch.ops.vlmreward.reward_head`` (CPU and CUDA implementations of
one schema each, plus fake kernels below so they trace under ``torch.compile``).
"""
from __future__ import annotations

import math
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
                mode: str = "binary", bank_checked: bool = False) -> RewardOutput:
    """Probabilities and rewards of goals from image embeddings and a cached goal bank, fused.

    Implements Baumli et al. (arXiv 2312.09187) eq. 1, ``p(l|o) = softmax_{l' in L}(logit_scale *
    cos(f(o), g(l')))`` at the goal l, with L = the goal's row of ``goal_sets``, and eq. 2,
    ``r = 1[p > threshold]``. Precision against float64 math: relative error of p <= 1e-5 for float64
    inputs, <= 1e-4 for float32/float16/bfloat16 inputs (CPU: float32 matmul of the raw embeddings, float64
    norms and softmax; CUDA: float64 throughout).

    Args:
        image_embeddings: (B, D) float32/float16/bfloat16/float64, unnormalised image embeddings f(o).
        text_embeddings: (K, D) floating, embeddings of every goal and negative (normalised here).
        goal_sets: (G, 1 + N) int64; row g = [index of goal g, indices of its N negatives] into
            ``text_embeddings``; -1 pads rows with fewer negatives.
        logit_scale: 1 / temperature (> 0); for CLIP, ``model.logit_scale.exp()`` (100 for OpenAI CLIP).
        threshold: beta of eq. 2 (rewards are 1.0 where probs > threshold, strictly).
        goal_ids: optional (B,) int64; row b is scored against goal ``goal_ids[b]`` only.
        mode: "binary" (eq. 2), "probability" (rewards = probs) or "cosine" (rewards = cos(image, goal)).
        bank_checked: ``text_embeddings`` and ``goal_sets`` passed :func:`validate_goal_bank` (GoalBank does
            this once). On CUDA the call then makes no host sync and is CUDA-graph capturable; per-call value
            errors it cannot raise without a sync (NaN/Inf/zero image rows, goal_ids out of range) give NaN
            probs and rewards in those frames. Without it, CUDA checks every value with one sync. On the CPU
            every check runs either way.

    Returns:
        RewardOutput(probs, rewards), float32, (B, G), or (B,) with ``goal_ids``, on the inputs' device.

    Raises:
        TypeError: non-floating embeddings, non-int64 goal_sets/goal_ids.
        ValueError: shape or D mismatch, empty batch, indices out of range, NaN/Inf or zero embeddings,
            tensors on different devices (meta included), bad logit_scale/threshold/mode.
    """
    probs, rewards = torch.ops.vlmreward.reward_head(image_embeddings, text_embeddings, goal_sets,
                                                     float(logit_scale), float(threshold), goal_ids, mode,
                                                     bool(bank_checked))
    return RewardOutput(probs, rewards)


def validate_goal_bank(text_embeddings: torch.Tensor, goal_sets: torch.Tensor) -> None:
    """Checks a goal bank once, so that :func:`reward_head` can skip it per call (``bank_checked=True``).

    Args:
        text_embeddings: (K, D) float32/float16/bfloat16/float64, every row finite and non-zero.
        goal_sets: (G, 1 + N) int64 on the same device; entries in [-1, K), -1 = padding, the first column
            (the goal) never padding.

    Raises:
        TypeError / ValueError: as :func:`reward_head` for the same problems (same messages).
    """
    if not isinstance(text_embeddings, torch.Tensor) or not isinstance(goal_sets, torch.Tensor):
        raise TypeError("validate_goal_bank: text_embeddings and goal_sets must be tensors")
    if text_embeddings.dtype not in _FLOATING:
        raise TypeError(f"reward_head: embeddings must be float32/float16/bfloat16/float64, got {text_embeddings.dtype}")
    if text_embeddings.dim() != 2 or text_embeddings.shape[0] == 0:
        raise ValueError(f"reward_head: text_embeddings must be a non-empty (K, D), got {tuple(text_embeddings.shape)}")
    _check_goal_sets(goal_sets, text_embeddings.device)
    norms = torch.linalg.vector_norm(text_embeddings.double(), dim=1)
    if not bool((torch.isfinite(norms) & (norms > 0)).all()):
        raise ValueError("reward_head: text_embeddings contain NaN/Inf values or an all-zero row")
    K = text_embeddings.shape[0]
    if not (bool(((goal_sets >= -1) & (goal_sets < K)).all()) and bool((goal_sets[:, 0] >= 0).all())):
        raise ValueError(f"reward_head: goal_sets entries must index text_embeddings (0 <= k < K = {K}, -1 for "
                         "padding) and the first column (the goal) cannot be padding")


def fused_reward(frames, encode_image: Callable[[torch.Tensor], torch.Tensor], text_embeddings: torch.Tensor,
                 goal_sets: torch.Tensor, *, logit_scale: float, threshold: float,
                 goal_ids: torch.Tensor | None = None, mode: str = "binary", bank_checked: bool = False,
                 **preprocess_kwargs) -> RewardOutput:
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
                           threshold=threshold, goal_ids=goal_ids, mode=mode, bank_checked=bank_checked)


# Argument checks of the fake (torch.compile / FakeTensor / meta) kernels: the same metadata checks and
# messages as the C++ kernels (csrc/ops/preprocess.cpp, reward_head.cpp), so that tracing rejects what eager
# execution rejects. Value checks (indices, NaN) need data and stay with the real kernels.
_FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _check_goal_sets(goal_sets, device):
    if goal_sets.dtype != torch.int64:
        raise TypeError(f"reward_head: goal_sets must be int64, got {goal_sets.dtype}")
    if goal_sets.dim() != 2 or goal_sets.shape[0] == 0 or goal_sets.shape[1] == 0:
        raise ValueError(f"reward_head: goal_sets must be a non-empty (G, 1 + N) tensor, got {tuple(goal_sets.shape)}")
    if goal_sets.device != device:
        raise ValueError(f"reward_head: tensors on different devices: text_embeddings {device}, goal_sets "
                         f"{goal_sets.device}")


def _check_reward_head(image, text, goal_sets, logit_scale, threshold, goal_ids, mode):
    if image.dtype not in _FLOATING or text.dtype not in _FLOATING:
        raise TypeError(f"reward_head: embeddings must be float32/float16/bfloat16/float64, got {image.dtype} and "
                        f"{text.dtype}")
    if image.dim() != 2:
        raise ValueError(f"reward_head: image_embeddings must be (B, D), got {tuple(image.shape)}")
    if text.dim() != 2:
        raise ValueError(f"reward_head: text_embeddings must be (K, D), got {tuple(text.shape)}")
    if image.shape[0] == 0:
        raise ValueError("reward_head: empty batch (B = 0)")
    if text.shape[0] == 0:
        raise ValueError("reward_head: text_embeddings is empty (K = 0)")
    if image.shape[1] != text.shape[1]:
        raise ValueError(f"reward_head: embedding sizes differ: image D = {image.shape[1]}, text D = {text.shape[1]}")
    if image.shape[1] == 0:
        raise ValueError("reward_head: embeddings are empty (D = 0)")
    if goal_sets.dtype != torch.int64:
        raise TypeError(f"reward_head: goal_sets must be int64, got {goal_sets.dtype}")
    if goal_sets.dim() != 2 or goal_sets.shape[0] == 0 or goal_sets.shape[1] == 0:
        raise ValueError(f"reward_head: goal_sets must be a non-empty (G, 1 + N) tensor, got {tuple(goal_sets.shape)}")
    if not (text.device == image.device == goal_sets.device):
        raise ValueError(f"reward_head: tensors on different devices: image_embeddings {image.device}, "
                         f"text_embeddings {text.device}, goal_sets {goal_sets.device}")
    if not (math.isfinite(logit_scale) and logit_scale > 0):
        raise ValueError(f"reward_head: logit_scale must be positive and finite, got {logit_scale}")
    if not math.isfinite(threshold):
        raise ValueError(f"reward_head: threshold must be finite, got {threshold}")
    if mode not in REWARD_MODES:
        raise ValueError(f"reward_head: mode must be 'binary', 'probability' or 'cosine', got '{mode}'")
    if goal_ids is not None:
        if goal_ids.dtype != torch.int64:
            raise TypeError(f"reward_head: goal_ids must be int64, got {goal_ids.dtype}")
        if goal_ids.dim() != 1 or goal_ids.shape[0] != image.shape[0]:
            raise ValueError(f"reward_head: goal_ids must be (B,) with B = {image.shape[0]}, got "
                             f"{tuple(goal_ids.shape)}")
        if goal_ids.device != image.device:
            raise ValueError(f"reward_head: goal_ids on {goal_ids.device}, embeddings on {image.device}")


def _check_preprocess(frames, image_size, mean, std, resize_mode, interpolation, dtype):
    if frames.dtype != torch.uint8:
        raise TypeError(f"preprocess: frames must be uint8 RGB images, got {frames.dtype}")
    if frames.dim() != 4:
        raise ValueError(f"preprocess: frames must have shape (B, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[3] != 3:
        raise ValueError(f"preprocess: frames must have 3 (RGB) channels in the last dimension, got {frames.shape[3]}")
    if frames.shape[0] == 0:
        raise ValueError("preprocess: empty batch (B = 0)")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise ValueError(f"preprocess: frames have zero height or width: {tuple(frames.shape)}")
    if not 1 <= image_size <= 4096:
        raise ValueError(f"preprocess: image_size must be in [1, 4096], got {image_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"preprocess: mean and std need 3 values (RGB), got {len(mean)} and {len(std)}")
    if dtype not in _FLOATING:
        raise TypeError(f"preprocess: dtype must be float32, float16, bfloat16 or float64, got {dtype}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"preprocess: interpolation must be 'bicubic' or 'bilinear', got '{interpolation}'")
    if not all(math.isfinite(m) and math.isfinite(s) and s > 0 for m, s in zip(mean, std)):
        raise ValueError(f"preprocess: mean must be finite and std positive, got mean {list(mean)}, std {list(std)}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"preprocess: resize_mode must be 'shortest', 'longest' or 'squash', got '{resize_mode}'")


@torch.library.register_fake("vlmreward::preprocess")
def _preprocess_fake(frames, image_size, mean, std, resize_mode, interpolation, dtype):
    _check_preprocess(frames, image_size, mean, std, resize_mode, interpolation, dtype)
    return frames.new_empty((frames.shape[0], 3, image_size, image_size), dtype=dtype)


@torch.library.register_fake("vlmreward::reward_head")
def _reward_head_fake(image_embeddings, text_embeddings, goal_sets, logit_scale, threshold, goal_ids, mode,
                      bank_checked=False):
    _check_reward_head(image_embeddings, text_embeddings, goal_sets, logit_scale, threshold, goal_ids, mode)
    shape = (image_embeddings.shape[0],) if goal_ids is not None else (image_embeddings.shape[0], goal_sets.shape[0])
    out = image_embeddings.new_empty(shape, dtype=torch.float32)
    return out, torch.empty_like(out)
