"""Reward throughput of the default model: frames/s at batch 64, end to end from uint8 frames (pytest-benchmark).

    PYTHONPATH=. python -m pytest bench/bench_default_model.py --benchmark-columns=mean,ops,rounds -s

One call turns a batch of 64 uint8 frames (64,H,W,3) and one goal per frame into rewards:
  ours       ``RewardModel(frames, goal_ids)``: preprocess kernel (resize + normalise) -> image tower ->
             fused reward head (softmax over goal + N negatives, threshold)
  open_clip  what an open_clip user writes: open_clip's PIL transform frame by frame, ``model.encode_image``
             (NCHW), then normalise, matmul, softmax over each goal's set and threshold in plain torch
Frames: MiniGrid 224x224 (Find) and classic-control 400x600 (CartPole), real environment frames. Each call's
rewards agree with ours (asserted). Falls back to the default architecture with random weights (same compute)
when vlmreward/assets/default/ holds no model. Ratios to ours print at the end.
"""
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vlmreward  # noqa: F401
from vlmreward.goals import GoalBank
from vlmreward.models import CONFIG_NAME, DEFAULT_MODEL_DIR, load_model
from vlmreward.reward import RewardModel

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
BATCH = 64


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    if (DEFAULT_MODEL_DIR / CONFIG_NAME).is_file():
        return load_model("default")
    return load_model("VLMR-ConvMixer-256-4-84-MiniLM", "random")


def _frames(env_id: str) -> np.ndarray:
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frames = []
    for _ in range(BATCH):
        frames.append(np.asarray(env.render()))
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset()
    env.close()
    return np.stack(frames)


FPS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def ratios():
    yield
    for env_id in sorted({e for e, _ in FPS}):
        ours = FPS.get((env_id, "ours"))
        cells = [f"{impl} {fps:.0f} frames/s ({ours / fps:.2f}x)" for (e, impl), fps in FPS.items()
                 if e == env_id and impl != "ours"]
        print(f"\n{env_id}: ours {ours:.0f} frames/s; " + "; ".join(cells) + " (ratio = ours / baseline)")


def _open_clip_reward(model, bank, transform, threshold):
    """The plain open_clip + torch composition a user would write (the baseline)."""
    from PIL import Image

    def call(frames, ids):
        with torch.inference_mode():
            pixels = torch.stack([transform(Image.fromarray(f)) for f in frames.numpy()])
            img = F.normalize(model.model.encode_image(pixels).float(), dim=-1)
            sets = bank.goal_sets[ids]
            logits = model.logit_scale * torch.einsum("bd,bnd->bn", img, bank.text_embeddings[sets])
            probs = logits.softmax(-1)[:, 0]
            return probs, (probs > threshold).float()
    return call


@pytest.mark.parametrize("impl", ["ours", "open_clip"])
@pytest.mark.parametrize("env_id", ["vlmreward/Find-v0", "vlmreward/CartPoleUpright-v0"])
def test_reward_throughput(benchmark, model, env_id, impl):
    env = gym.make(env_id)
    task = list(env.unwrapped.task_set)
    env.close()
    bank = GoalBank(model, task, num_negatives=min(8, len(task) - 1))  # N <= 8: every set is full width
    rm = RewardModel(model, bank, threshold=0.5)
    frames = torch.from_numpy(_frames(env_id))
    ids = torch.arange(BATCH, dtype=torch.int64) % len(task)
    expected = rm(frames, ids).probs
    fn = rm if impl == "ours" else _open_clip_reward(model, bank, model.transform(), 0.5)
    out = benchmark.pedantic(fn, args=(frames, ids), rounds=int(os.environ.get("BENCH_ROUNDS", "5")),
                             warmup_rounds=1)
    probs = out[0] if isinstance(out, tuple) else out.probs
    # PIL's bicubic resize differs from ours by a few grey levels: same rewards up to that
    torch.testing.assert_close(probs, expected, atol=2e-2, rtol=0)
    if benchmark.disabled:  # --benchmark-disable (the CI smoke run): the code ran once, nothing to report
        return
    fps = BATCH / benchmark.stats.stats.mean
    benchmark.extra_info["frames_per_s"] = fps
    FPS[(env_id, impl)] = fps
    print(f"\n{env_id} {tuple(frames.shape)} {impl}: {fps:.0f} frames/s at batch {BATCH} ({model.identity})")
