"""Classic-control goals, the VLM-RM peer's setting (Rocamonde et al., arXiv 2310.12921, section 4.2).

Gymnasium's CartPole and MountainCar with language goals and exact ground truth from the state vector.
Observation, reward, termination: gymnasium's own. Frames: gymnasium's renderer (uint8 (400, 600, 3));
MountainCar can draw a textured sky and ground behind the car (the peer found CLIP needs it).

Goal ground truth (state: CartPole (x, x_dot, theta, theta_dot), MountainCar (position, velocity)):
- "the pole is upright":                 |theta| <= 6 degrees (half of gymnasium's 12-degree failure angle)
- "the pole is leaning to the left":     theta < -8 degrees (theta > 0 is a pole leaning right; gymnasium
  ends the episode at 12 degrees; between 6 and 8 degrees neither upright nor leaning)
- "the pole is leaning to the right":    theta > 8 degrees
- "the cart is on the left side of the track":  x < -1.2 (half of gymnasium's 2.4 track limit)
- "the cart is on the right side of the track": x > 1.2
- "the car is at the top of the hill next to the flag": position >= 0.5 (gymnasium's goal_position)
- "the car is at the bottom of the valley": |position - (-pi/6)| <= 0.1 (the valley floor of sin(3x))
- "the car is on top of the left hill":    position <= -0.9
Every goal is a training goal (each environment's softmax over goals then contrasts distinct regions of its
state space); the first is what ``reset`` samples by default (``goal_pool``), i.e. the task the environment
is named after. Other wordings: :mod:`vlmreward.envs.language`.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv
from gymnasium.envs.classic_control.mountain_car import MountainCarEnv

_DEG = math.pi / 180
CARTPOLE_GOALS = {
    "the pole is upright": lambda s: abs(s[2]) <= 6 * _DEG,
    "the pole is leaning to the left": lambda s: s[2] < -8 * _DEG,
    "the pole is leaning to the right": lambda s: s[2] > 8 * _DEG,
    "the cart is on the left side of the track": lambda s: s[0] < -1.2,
    "the cart is on the right side of the track": lambda s: s[0] > 1.2,
}
MOUNTAINCAR_GOALS = {
    "the car is at the top of the hill next to the flag": lambda s: s[0] >= 0.5,
    "the car is at the bottom of the valley": lambda s: abs(s[0] + math.pi / 6) <= 0.1,
    "the car is on top of the left hill": lambda s: s[0] <= -0.9,
}


class _ClassicGoals:
    """task_set / goal_success / goal-aware reset and step info for a gymnasium classic-control env."""

    GOALS: dict = {}
    reward_style = "per_step"  # every step in the goal state is rewarded (vlmreward.envs.DECLARATIONS)

    def _init_goals(self, goal_pool):
        self.task_set = tuple(self.GOALS)
        self.train_goals = self.task_set
        self.heldout_goals = ()
        self.goal_pool = self.task_set[:1] if goal_pool is None else tuple(goal_pool)
        for g in self.goal_pool:
            self._check_goal(g)
        self.goal = self.goal_pool[0]

    def _check_goal(self, goal):
        if not isinstance(goal, str):
            raise TypeError(f"goal must be a str, got {type(goal).__name__}")
        if goal not in self.GOALS:
            raise ValueError(f"goal {goal!r} is not in the task set {self.task_set}")

    def goal_success(self, goal: str) -> bool:
        """Ground truth of ``goal`` in the current state (thresholds in the module doc).

        Raises TypeError / ValueError for a goal outside ``task_set``; RuntimeError before ``reset``.
        """
        self._check_goal(goal)
        if self.state is None:
            raise RuntimeError("call reset() before goal_success()")
        return bool(self.GOALS[goal](np.asarray(self.state, dtype=np.float64)))

    def sample_states(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` frames of uniformly sampled states (full coverage of every goal's region), for datasets.

        CartPole: x in [-2.4, 2.4], theta in [-24, 24] degrees; MountainCar: position in [-1.2, 0.6], half
        of the states near the flag (the training goal's region is 6% of the track).
        Returns (frames uint8 (n,H,W,3), labels bool (n, len(task_set))). Needs render_mode "rgb_array".
        """
        if self.render_mode != "rgb_array":
            raise ValueError("sample_states needs render_mode='rgb_array'")
        rng = np.random.default_rng(seed)
        self.reset(seed=seed)
        frames, labels = [], []
        for _ in range(n):
            if len(self.state) == 4:
                self.state = np.array([rng.uniform(-2.4, 2.4), rng.normal(0, 1), rng.uniform(-0.42, 0.42),
                                       rng.normal(0, 1)])
            else:
                lo = self.min_position if rng.random() < 0.5 else self.goal_position - 0.25
                self.state = np.array([rng.uniform(lo, self.max_position), rng.uniform(-0.07, 0.07)])
            frames.append(np.asarray(self.render()))
            labels.append([self.goal_success(g) for g in self.task_set])
        return np.stack(frames), np.array(labels, dtype=bool)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        options = dict(options or {})
        goal = options.pop("goal", None)
        if goal is not None:
            self._check_goal(goal)
        obs, info = super().reset(seed=seed, options=options or None)
        goal = goal if goal is not None else self.goal_pool[int(self.np_random.integers(len(self.goal_pool)))]
        self._check_goal(goal)  # goal_pool may be set from outside (vector wrappers use set_attr)
        self.goal = goal
        return obs, {**info, "goal": self.goal, "success": self.goal_success(self.goal)}

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, {**info, "goal": self.goal, "success": self.goal_success(self.goal)}


class CartPoleUpright(_ClassicGoals, CartPoleEnv):
    """CartPole-v1 with goals (default goal "the pole is upright"). Args: render_mode, goal_pool."""

    GOALS = CARTPOLE_GOALS

    def __init__(self, render_mode: str | None = None, goal_pool=None):
        super().__init__(render_mode=render_mode)
        self._init_goals(goal_pool)


class MountainCarFlag(_ClassicGoals, MountainCarEnv):
    """MountainCar-v0 with goals (default goal: the flag).

    Args:
        render_mode: None or "rgb_array".
        textured: draw a textured sky and ground instead of the white background (fixed pattern, seed 0).
        goal_pool: goals ``reset`` samples from (default: the flag).
    """

    GOALS = MOUNTAINCAR_GOALS

    def __init__(self, render_mode: str | None = None, textured: bool = False, goal_pool=None):
        super().__init__(render_mode=render_mode)
        self.textured = bool(textured)
        self._texture = None
        self._init_goals(goal_pool)

    def render(self):
        frame = super().render()
        if frame is None or not self.textured:
            return frame
        if self._texture is None or self._texture.shape != frame.shape:
            self._texture = self._make_texture(*frame.shape[:2])
        white = np.all(frame == 255, axis=-1)
        frame = frame.copy()
        frame[white] = self._texture[white]
        return frame

    def _make_texture(self, h: int, w: int) -> np.ndarray:
        """Sky (blue gradient with soft noise) above the track curve, grass-and-soil noise below it."""
        rng = np.random.default_rng(0)
        scale = w / (self.max_position - self.min_position)
        xs = np.arange(w) / scale + self.min_position
        surface_row = h - self._height(xs) * scale  # gymnasium flips y: row of the track at each column
        rows = np.arange(h)[:, None]
        ground = rows > surface_row[None, :]
        t = rows / h
        sky = np.stack([110 + 100 * t, 160 + 80 * t, 235 + 15 * t], -1) * np.ones((1, w, 1))
        sky += rng.normal(0, 4, (h, w, 1))
        soil = np.array([70, 130, 40]) + rng.normal(0, 18, (h, w, 1)) * np.array([0.6, 1.0, 0.4])
        depth = np.clip((rows - surface_row[None, :]) / 60, 0, 1)[..., None]
        soil = soil * (1 - depth) + (np.array([110, 80, 50]) + rng.normal(0, 12, (h, w, 1))) * depth
        return np.clip(np.where(ground[..., None], soil, sky), 0, 254).astype(np.uint8)
