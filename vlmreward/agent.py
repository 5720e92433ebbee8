"""Language-conditioned actor-critic networks for the reference PPO trainer.

The policy sees the environment's observation and the frozen text embedding of the episode's goal (a row of
``GoalBank.goal_embeddings``), as the paper's language-conditioned agent does (Baumli et al., arXiv 2312.09187,
section 4): a held-out goal is just a new embedding. Two observation encoders:

* pixels (H,W,3) uint8: frames downsampled to ``image_size`` with ``vlmreward.preprocess`` (the kernel), a
  patchify convolution (one patch per grid cell of the household domains), two 3x3 convolutions with FiLM
  conditioning on the goal (Perez et al., arXiv 1709.07871), then an MLP;
* state vectors (D,) float: an MLP (CleanRL's ``ppo.py`` network for classic control).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical

import vlmreward


def layer_init(layer: nn.Module, std: float = 2 ** 0.5, bias: float = 0.0) -> nn.Module:
    """Orthogonal weights, constant bias (the PPO implementation detail CleanRL uses)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class PixelEncoder(nn.Module):
    """uint8 frames (B,H,W,3) + goal embedding (B,E) -> features (B,hidden)."""

    def __init__(self, goal_dim: int, *, image_size: int = 56, patch: int = 7, channels: int = 32,
                 hidden: int = 256):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image_size {image_size} must be a multiple of patch {patch}")
        self.image_size = image_size
        grid = image_size // patch
        self.stem = nn.Sequential(layer_init(nn.Conv2d(3, channels, patch, stride=patch)), nn.ReLU(),
                                  layer_init(nn.Conv2d(channels, channels, 3, padding=1)), nn.ReLU())
        self.film = layer_init(nn.Linear(goal_dim, 2 * channels), std=0.1) if goal_dim else None
        self.head = nn.Sequential(layer_init(nn.Conv2d(channels, channels, 3, padding=1)), nn.ReLU(),
                                  nn.Flatten(), layer_init(nn.Linear(channels * grid * grid, hidden)), nn.ReLU())

    @torch.no_grad()
    def prepare(self, frames) -> torch.Tensor:
        """Downsample uint8 frames (B,H,W,3) to float (B,3,S,S) in [0,1] with the preprocess kernel."""
        return vlmreward.preprocess(frames, image_size=self.image_size, mean=(0.0, 0.0, 0.0),
                                    std=(1.0, 1.0, 1.0), resize_mode="squash", interpolation="bilinear")

    def forward(self, pixels: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixels)
        if self.film is not None:
            gamma, beta = self.film(goal).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
            x = x * (1 + gamma) + beta
        return self.head(x)


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
        image_size, patch, hidden: pixel encoder sizes (frames are downsampled to image_size x image_size).
    Raises:
        ValueError: an observation shape that is neither (H,W,3) nor (D,), or a bad goal table.
    """

    def __init__(self, observation_shape: Sequence[int], num_actions: int, goal_embeddings: torch.Tensor, *,
                 image_size: int = 56, patch: int = 7, hidden: int = 256):
        super().__init__()
        goal_embeddings = torch.as_tensor(goal_embeddings, dtype=torch.float32)
        if goal_embeddings.dim() != 2 or goal_embeddings.shape[0] < 1:
            raise ValueError(f"goal_embeddings must be (G,E) with G >= 1, got {tuple(goal_embeddings.shape)}")
        self.register_buffer("goal_embeddings", goal_embeddings.detach().clone())
        goal_dim = goal_embeddings.shape[1]
        shape = tuple(observation_shape)
        if len(shape) == 3 and shape[-1] == 3:
            self.encoder = PixelEncoder(goal_dim, image_size=image_size, patch=patch, hidden=hidden)
            hidden_out = hidden
        elif len(shape) == 1:
            self.encoder = StateEncoder(shape[0], goal_dim)
            hidden_out = 64
        else:
            raise ValueError(f"observation shape {shape} is neither an (H,W,3) frame nor a (D,) state vector")
        self.actor = layer_init(nn.Linear(hidden_out, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_out, 1), std=1.0)

    def prepare(self, observations) -> torch.Tensor:
        """Raw batched observations (numpy) -> the float tensor the networks take, on the agent's device."""
        return self.encoder.prepare(observations).to(self.goal_embeddings.device)

    def features(self, x: torch.Tensor, goal_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, self.goal_embeddings[goal_ids])

    def get_value(self, x: torch.Tensor, goal_ids: torch.Tensor) -> torch.Tensor:
        """Value estimates (B,) for prepared observations x and int64 goal ids (B,)."""
        return self.critic(self.features(x, goal_ids)).squeeze(-1)

    def get_action_and_value(self, x: torch.Tensor, goal_ids: torch.Tensor, action: torch.Tensor | None = None,
                             deterministic: bool = False):
        """Returns action (B,) int64, its log-probability (B,), the policy entropy (B,) and the value (B,)."""
        h = self.features(x, goal_ids)
        dist = Categorical(logits=self.actor(h))
        if action is None:
            action = dist.logits.argmax(-1) if deterministic else dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(h).squeeze(-1)
