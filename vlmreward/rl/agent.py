"""Language-conditioned actor-critic networks for the reference PPO trainer.

The policy sees the environment's observation and the frozen text embedding of the episode's goal (a row of
``GoalBank.goal_embeddings``), as the paper's language-conditioned agent does (Baumli et al., arXiv 2312.09187,
section 4): a held-out goal is just a new embedding. Two observation encoders:

* pixels (H,W,3) uint8: frames downsampled to ``image_size`` with ``vlmreward.preprocess`` (the kernel), a
  patchify convolution (one patch per grid cell of the household domains), 3x3 convolutions with FiLM
  conditioning on the goal (Perez et al., arXiv 1709.07871), keypoints by spatial softmax and a max-pool,
  then an MLP;
* state vectors (D,) float: an MLP (CleanRL's ``ppo.py`` network for classic control).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.distributions import Categorical

import vlmreward


def layer_init(layer: nn.Module, std: float = 2 ** 0.5, bias: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (the PPO implementation detail CleanRL uses)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class SpatialSoftmax(nn.Module):
    """Cell features (B,N,C) of an n x n grid (N = n*n, row-major) -> expected (x, y) in [-1, 1] of each channel
    under a softmax over cells, (B,2C): all x then all y (Levine, Finn et al., arXiv 1504.00702): explicit
    coordinates of the goal object and of the agent, so the policy reads their relative position instead of
    memorising every pair of cells."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = math.isqrt(x.shape[1])
        p = x.softmax(1)
        line = torch.linspace(-1, 1, n, device=x.device, dtype=x.dtype)
        coords = torch.stack([line.repeat(n), line.repeat_interleave(n)], dim=1)  # (N,2): (x, y) of each cell
        return torch.einsum("bnc,nd->bdc", p, coords).flatten(1)


class PixelEncoder(nn.Module):
    """uint8 frames (B,H,W,3) + goal embedding (B,E) -> features (B,hidden).

    Patchify convolution (one patch per grid cell), optionally ``goal_heads`` goal-attention maps (the dot
    product of K linear queries of the goal with every cell's patch features, appended as channels and
    summarised by their keypoints), 3x3 convolution, FiLM by the goal, 3x3 convolutions, then keypoints (spatial
    softmax), a global max-pool of the feature maps and the projected goal into an MLP."""

    def __init__(self, goal_dim: int, *, image_size: int = 56, patch: int = 8, channels: int = 64,
                 hidden: int = 256, goal_heads: int = 0, depth: int = 3):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.image_size, self.patch = image_size, patch
        self.goal_heads = goal_heads if goal_dim else 0
        k = self.goal_heads
        self.patchify = nn.Sequential(layer_init(nn.Conv2d(3, channels, patch, stride=patch)), nn.ReLU())
        # goal attention over cells: K goal queries, dot products with every cell's content -> K match maps
        self.query = layer_init(nn.Linear(goal_dim, k * channels), std=1.0) if k else None
        # depth 3x3 convolutions in all (the stem is the first; depth 0: a per-cell 1x1 stem), FiLM after the
        # stem: the 3x3 convolutions relate neighbouring cells and cost ~9x a 1x1 one each
        size = 3 if depth else 1
        self.stem = nn.Sequential(layer_init(nn.Conv2d(channels + k, channels, size, padding=size // 2)), nn.ReLU())
        self.film = layer_init(nn.Linear(goal_dim, 2 * channels), std=0.1) if goal_dim else None
        layers: list[nn.Module] = []
        for i in range(max(depth - 1, 0)):
            layers += [nn.ReLU()] if i else []
            layers.append(layer_init(nn.Conv2d(channels, channels, 3, padding=1)))
        self.conv = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax()
        self.goal_proj = layer_init(nn.Linear(goal_dim, channels)) if goal_dim else None
        self.mlp = nn.Sequential(layer_init(nn.Linear((4 if goal_dim else 3) * channels + 2 * k, hidden)), nn.ReLU())

    @torch.no_grad()
    def prepare(self, frames) -> torch.Tensor:
        """Downsample uint8 frames (B,H,W,3) to float (B,3,S,S) in [0,1] with the preprocess kernel."""
        return vlmreward.preprocess(frames, image_size=self.image_size, mean=(0.0, 0.0, 0.0),
                                    std=(1.0, 1.0, 1.0), resize_mode="squash", interpolation="bilinear")

    def forward(self, pixels: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        # cells as (B,N,C) tokens: the patchify convolution (stride = kernel) and the 1x1 stem are matmuls,
        # ~5x faster forward + backward than the CPU convolution kernels at these shapes
        b, p = pixels.shape[0], self.patch
        n = self.image_size // p
        patchify = self.patchify[0]
        tokens = pixels.reshape(b, 3, n, p, n, p).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, 3 * p * p)
        cells = torch.relu(F.linear(tokens, patchify.weight.flatten(1), patchify.bias))
        parts = []
        if self.query is not None:
            c = cells.shape[2]
            match = torch.bmm(cells, self.query(goal).view(b, self.goal_heads, c).transpose(1, 2)) / c ** 0.5
            cells = torch.cat([cells, match], dim=2)
            parts.append(self.keypoints(match))
        stem = self.stem[0]
        if stem.kernel_size == (1, 1):
            x = torch.relu(F.linear(cells, stem.weight.flatten(1), stem.bias))
        else:
            x = self.stem(cells.transpose(1, 2).reshape(b, -1, n, n)).flatten(2).transpose(1, 2)
        if self.film is not None:
            gamma, beta = self.film(goal).unsqueeze(1).chunk(2, dim=2)
            x = x * (1 + gamma) + beta
        if len(self.conv):
            x = self.conv(x.transpose(1, 2).reshape(b, -1, n, n)).flatten(2).transpose(1, 2)
        parts += [self.keypoints(x), x.amax(dim=1)]
        if self.goal_proj is not None:
            parts.append(torch.relu(self.goal_proj(goal)))
        return self.mlp(torch.cat(parts, dim=1))


class StateEncoder(nn.Module):
    """float state vectors (B,D) + goal embedding (B,E) -> features (B,hidden)."""

    def __init__(self, state_dim: int, goal_dim: int, *, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(layer_init(nn.Linear(state_dim + goal_dim, hidden)), nn.Tanh(),
                                 layer_init(nn.Linear(hidden, hidden)), nn.Tanh())

    @torch.no_grad()
    def prepare(self, states) -> torch.Tensor:
        return torch.as_tensor(np.asarray(states), dtype=torch.float32)

    def forward(self, states: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([states, goal], dim=-1))


class Agent(nn.Module):
    """Actor-critic over a discrete action space, conditioned on goal embeddings.

    Args:
        observation_shape: one environment's observation shape: (H,W,3) uint8 frames or (D,) state vectors.
        num_actions: size of the ``Discrete`` action space.
        goal_embeddings: float (G,E) frozen text embeddings, row g = goal g (``GoalBank.goal_embeddings``);
            (G,0) for an environment without language goals. Stored as a buffer so checkpoints carry them.
        train_goal_ids: rows whose per-dimension mean and std standardise every goal embedding (text
            embeddings of similar goals are close, cosine ~0.9; standardising spreads them); default all rows.
        image_size, patch, channels, hidden, goal_heads, depth: pixel encoder sizes (frames are downsampled to
            image_size x image_size; one patch per grid cell; ``PixelEncoder``).
        goal_noise: std of Gaussian noise on the standardised goal embedding in the training forward only
            (a smoothness prior on the goal conditioning, for held-out goals' new embeddings); 0: off.
        wording_embeddings: float (G,W,E): goal g in W wordings (``Task.wording_embeddings``); the training
            forward reads each example's goal in a wording drawn uniformly (language augmentation, after Hill et
            al., arXiv 1910.00571: varied language for held-out goals); rollouts and evaluation read
            ``goal_embeddings``. None: off.
    Raises:
        ValueError: an observation shape that is neither (H,W,3) nor (D,), or a bad goal table.
    """

    def __init__(self, observation_shape: Sequence[int], num_actions: int, goal_embeddings: torch.Tensor, *,
                 train_goal_ids: Sequence[int] | None = None, image_size: int = 56, patch: int = 8,
                 channels: int = 64, hidden: int = 256, goal_heads: int = 0, depth: int = 3,
                 precision: str = "fp32", goal_noise: float = 0.0,
                 wording_embeddings: torch.Tensor | None = None):
        super().__init__()
        if not goal_noise >= 0:  # NaN too
            raise ValueError(f"goal_noise must be >= 0, got {goal_noise}")
        self.goal_noise = float(goal_noise)
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.bf16 = precision == "bf16"
        goal_embeddings = torch.as_tensor(goal_embeddings, dtype=torch.float32).detach().clone()
        if goal_embeddings.dim() != 2 or goal_embeddings.shape[0] < 1:
            raise ValueError(f"goal_embeddings must be (G,E) with G >= 1, got {tuple(goal_embeddings.shape)}")
        ref = goal_embeddings if train_goal_ids is None else goal_embeddings[list(train_goal_ids)]
        mean = ref.mean(0)
        std = ref.std(0) if len(ref) > 1 else torch.ones_like(mean)
        self.register_buffer("goal_embeddings", goal_embeddings)
        if wording_embeddings is not None:
            wording_embeddings = torch.as_tensor(wording_embeddings, dtype=torch.float32).detach().clone()
            if wording_embeddings.dim() != 3 or wording_embeddings.shape[::2] != goal_embeddings.shape:
                raise ValueError(f"wording_embeddings must be (G,W,E) = ({goal_embeddings.shape[0]},W,"
                                 f"{goal_embeddings.shape[1]}), got {tuple(wording_embeddings.shape)}")
        self.register_buffer("wording_embeddings", wording_embeddings)
        self.register_buffer("goal_mean", mean)
        self.register_buffer("goal_std", std.clamp_min(1e-3 * float(std.max()) if std.numel() else 1.0))
        goal_dim = goal_embeddings.shape[1]
        shape = tuple(observation_shape)
        self.critic_encoder = None
        if len(shape) == 3 and shape[-1] == 3:
            self.encoder = PixelEncoder(goal_dim, image_size=image_size, patch=patch, channels=channels,
                                        hidden=hidden, goal_heads=goal_heads, depth=depth)
            hidden_out = hidden
        elif len(shape) == 1:
            self.encoder = StateEncoder(shape[0], goal_dim)
            # separate critic trunk (CleanRL's classic-control agent): unnormalised returns (CartPole: up to
            # ~100) give value gradients that, through a shared trunk and the global norm clip, drown the policy's
            self.critic_encoder = StateEncoder(shape[0], goal_dim)
            hidden_out = 64
        else:
            raise ValueError(f"observation shape {shape} is neither an (H,W,3) frame nor a (D,) state vector")
        self.actor = layer_init(nn.Linear(hidden_out, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_out, 1), std=1.0)

    def prepare(self, observations) -> torch.Tensor:
        """Raw batched observations (numpy) -> the float tensor the networks take, on the agent's device."""
        return self.encoder.prepare(observations).to(self.goal_embeddings.device)

    def _goal(self, goal_ids: torch.Tensor) -> torch.Tensor:
        return (self.goal_embeddings[goal_ids] - self.goal_mean) / self.goal_std

    def _encode(self, x, goal) -> torch.Tensor:
        """Encoder features, float32; with precision "bf16" the encoder runs under bfloat16 autocast (the
        heads, log-probabilities and values stay float32)."""
        with torch.autocast(x.device.type, torch.bfloat16, enabled=self.bf16):
            return self.encoder(x, goal).float()

    def _value(self, x, goal, h) -> torch.Tensor:
        if self.critic_encoder is not None:
            h = self.critic_encoder(x, goal)
        return self.critic(h).squeeze(-1)

    def get_value(self, x: torch.Tensor, goal_ids: torch.Tensor) -> torch.Tensor:
        """Value estimates (B,) for prepared observations x and int64 goal ids (B,)."""
        goal = self._goal(goal_ids)
        return self._value(x, goal, None if self.critic_encoder is not None else self._encode(x, goal))

    def forward(self, x: torch.Tensor, goal_ids: torch.Tensor, action: torch.Tensor):
        """``get_action_and_value`` for given actions: the training call (DistributedDataParallel wraps it);
        here only, never in rollouts or evaluation, each goal is read in a random wording (with
        ``wording_embeddings``) and the standardised goal embedding gets Gaussian noise of std ``goal_noise``."""
        if self.wording_embeddings is None:
            goal = self._goal(goal_ids)
        else:
            w = torch.randint(self.wording_embeddings.shape[1], goal_ids.shape, device=goal_ids.device)
            goal = (self.wording_embeddings[goal_ids, w] - self.goal_mean) / self.goal_std
        if self.goal_noise:
            goal = goal + self.goal_noise * torch.randn_like(goal)
        return self._act(x, goal, action)

    def get_action_and_value(self, x: torch.Tensor, goal_ids: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False):
        """Returns action (B,) int64, its log-probability (B,), the policy entropy (B,) and the value (B,)."""
        return self._act(x, self._goal(goal_ids), action, deterministic)

    def _act(self, x, goal, action=None, deterministic: bool = False):
        h = self._encode(x, goal)
        dist = Categorical(logits=self.actor(h))
        if action is None:
            action = dist.logits.argmax(-1) if deterministic else dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self._value(x, goal, h)
