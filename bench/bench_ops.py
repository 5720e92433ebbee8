"""Kernels vs baselines, side by side (pytest-benchmark). `python bench/report.py` runs this and prints ratios.

preprocess (uint8 frames -> (B,3,224,224) float32, bicubic, open_clip's default "shortest" mode):
  ours        vlmreward.preprocess (fused C++ kernel)
  pil         open_clip.image_transform (PIL) frame by frame, stacked: what open_clip users run
  tv2         torchvision.transforms.v2 on the uint8 batch (bicubic antialias, centre crop, normalise)
  interp      float F.interpolate(bicubic, antialias) + crop + normalise (as some reward codebases do)
  copy        a plain copy of the same bytes ours reads + writes: the memory-bandwidth floor
reward_head (B frames, K texts, each text a goal whose negatives are the K-1 others, as GoalBank's default):
  ours        vlmreward.reward_head (all goals (B,K), and per-frame goal_ids (B,)), every mode
  torch       the plain composition: normalize, matmul, gather each goal's set, softmax, select, compare
relation_scores (B frames x 49 cells, K two-object captions, D=64: the relation head's score of every caption):
  ours        vlmreward.relation.relation_scores (shifted exponentials, neighbour sum as a matmul, in place)
  torch       the formula as written: cosines, logsumexp over the 4 neighbours (stacked), logsumexp over cells

VLMREWARD_PREPROCESS_ISA=avx2 (or baseline) times the kernels CPUs without AVX-512 run (read at import).
BENCH_THREADS (default 2) sets torch's threads; BENCH_DEVICE=cuda runs ours, tv2, interp and torch on the GPU
(synchronised around each call; PIL and copy stay CPU-only and are skipped there).
"""
import os

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import v2

import vlmreward

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
DEVICE = os.environ.get("BENCH_DEVICE", "cpu")
SIZES = {"400x600": (400, 600), "224x224": (224, 224), "64x64": (64, 64)}
BATCHES = [1, 16, 64, 256]
S = 224
MEAN, STD = vlmreward.OPENAI_CLIP_MEAN, vlmreward.OPENAI_CLIP_STD


@pytest.fixture(autouse=True, scope="module")
def threads():
    torch.set_num_threads(THREADS)


def _frames(shape, batch):
    rng = np.random.default_rng(0)
    h, w = shape
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base[None] + rng.normal(0, 20, (batch, h, w, 3)), 0, 255).astype(np.uint8)


def _on_device(fn):
    if DEVICE == "cpu":
        return fn

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def _pil(frames):
    tf = open_clip.image_transform(S, is_train=False)
    return lambda: torch.stack([tf(Image.fromarray(f)) for f in frames])


def _tv2(frames):
    tf = v2.Compose([v2.Resize(S, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(S),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    x = torch.from_numpy(frames).to(DEVICE).permute(0, 3, 1, 2)
    return lambda: tf(x)


def _interp(frames):
    x = torch.from_numpy(frames).to(DEVICE)
    mean, std = torch.tensor(MEAN, device=DEVICE).view(1, 3, 1, 1), torch.tensor(STD, device=DEVICE).view(1, 3, 1, 1)
    h, w = frames.shape[1:3]
    size = (S, int(S * w / h)) if h <= w else (int(S * h / w), S)

    def run():
        y = F.interpolate(x.permute(0, 3, 1, 2).float(), size=size, mode="bicubic", antialias=True)
        t, l = (y.shape[2] - S) // 2, (y.shape[3] - S) // 2
        return ((y[:, :, t:t + S, l:l + S] / 255).clamp(0, 1) - mean) / std
    return run


def _ours(frames):
    x = torch.from_numpy(frames).to(DEVICE)
    return lambda: vlmreward.preprocess(x)


def _copy(frames):
    src = torch.from_numpy(frames)
    src_out = torch.empty(frames.shape[0], 3, S, S)
    dst_in, dst_out = torch.empty_like(src), torch.empty_like(src_out)

    def run():
        dst_in.copy_(src)
        dst_out.copy_(src_out)
    return run


PREPROCESS = {"ours": _ours, "pil": _pil, "tv2": _tv2, "interp": _interp, "copy": _copy}


@pytest.mark.parametrize("impl", list(PREPROCESS))
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("size", list(SIZES))
def test_preprocess(benchmark, size, batch, impl):
    frames = _frames(SIZES[size], batch)
    if impl == "pil" and batch > 64:  # PIL is linear in the batch: time 64 frames and scale in the report
        pytest.skip("PIL timed at batch <= 64")
    if DEVICE != "cpu" and impl in ("pil", "copy"):
        pytest.skip("CPU-only baseline")
    benchmark.group = f"preprocess {size} B={batch}"
    benchmark.extra_info.update(frames=batch, bytes=frames.nbytes + batch * 3 * S * S * 4)
    fn = _on_device(PREPROCESS[impl](frames))
    benchmark.pedantic(fn, rounds=5 if batch * frames[0].size > 2e7 else 10, warmup_rounds=1)


def _reward_problem(B, K, D):
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(B, D, generator=g), torch.randn(K, D, generator=g)
    sets = torch.stack([torch.cat([torch.tensor([k]), torch.tensor([j for j in range(K) if j != k])])
                        for k in range(K)])
    ids = torch.randint(0, K, (B,), generator=g)
    return image.to(DEVICE), text.to(DEVICE), sets.to(DEVICE), ids.to(DEVICE)


def _torch_head(image, text, sets, ids, mode, scale=100.0, threshold=0.5):
    x, t = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    logits = scale * x @ t.T
    if ids is None:
        probs = logits[:, sets].softmax(-1)[..., 0]  # (B, G, 1+N)
        cos = logits[:, sets[:, 0]] / scale
    else:
        probs = torch.gather(logits, 1, sets[ids]).softmax(-1)[:, 0]
        cos = torch.gather(logits, 1, sets[ids, :1])[:, 0] / scale
    return probs, {"binary": (probs > threshold).float(), "probability": probs, "cosine": cos}[mode]


@pytest.mark.parametrize("impl", ["ours", "torch"])
@pytest.mark.parametrize("mode", ["binary", "probability", "cosine"])
@pytest.mark.parametrize("goals", ["all", "goal_ids"])
@pytest.mark.parametrize("shape", ["B=256,K=64,D=512", "B=4096,K=256,D=768"])
def test_reward_head(benchmark, shape, goals, mode, impl):
    B, K, D = (int(p.split("=")[1]) for p in shape.split(","))
    image, text, sets, ids = _reward_problem(B, K, D)
    ids = ids if goals == "goal_ids" else None
    benchmark.group = f"reward_head {shape} {goals} {mode}"
    if impl == "ours":  # a GoalBank's tensors: validated once, as RewardModel calls it
        vlmreward.ops.validate_goal_bank(text, sets)
        fn = lambda: vlmreward.reward_head(image, text, sets, logit_scale=100.0, threshold=0.5, goal_ids=ids,  # noqa
                                           mode=mode, bank_checked=True)
    else:
        fn = lambda: _torch_head(image, text, sets, ids, mode)  # noqa
    benchmark.pedantic(_on_device(fn), rounds=20 if B <= 256 else 5, warmup_rounds=1)


def _relation_lse(cells, objects, grid=7, tau=0.1):
    b, k = cells.shape[0], objects.shape[0]
    first = torch.einsum("bcd,kd->bck", cells, objects[:, 0]) / tau
    second = torch.einsum("bcd,kd->bck", cells, objects[:, 1]) / tau
    padded = F.pad(first.reshape(b, grid, grid, k), (0, 0, 1, 1, 1, 1), value=-float("inf"))
    near = torch.logsumexp(torch.stack([padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                                        padded[:, 1:-1, 2:]]), 0).reshape(b, grid * grid, k)
    return tau * torch.logsumexp(near + second, dim=1)


@pytest.mark.parametrize("impl", ["ours", "torch"])
@pytest.mark.parametrize("shape", ["B=32,K=2256", "B=256,K=2256"])
def test_relation_scores(benchmark, shape, impl):
    from vlmreward.relation import relation_scores
    B, K = (int(p.split("=")[1]) for p in shape.split(","))
    g = torch.Generator().manual_seed(0)
    cells = F.normalize(torch.randn(B, 49, 64, generator=g), dim=-1).to(DEVICE)
    objects = F.normalize(torch.randn(K, 2, 64, generator=g), dim=-1).to(DEVICE)
    benchmark.group = f"relation_scores {shape}"
    fn = (lambda: relation_scores(cells, objects, 7, 0.1)) if impl == "ours" else (lambda: _relation_lse(cells, objects))

    def run():
        with torch.inference_mode():
            return fn()
    benchmark.pedantic(_on_device(run), rounds=10 if B <= 32 else 3, warmup_rounds=1)
