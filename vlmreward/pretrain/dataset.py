"""Labelled frame datasets from the registered environments (training data and offline evaluation).

Every stored frame is labelled with the ground-truth ``goal_success`` of EVERY goal of its environment's
task set (issue 5). Episodes mix scripted-expert, partly random (epsilon) and random play; the split is by
disjoint environment seeds (:data:`SPLIT_SEEDS`). Frames are stored once, already resized to the model's
image size by :func:`vlmreward.preprocess` (same kernel and settings as at reward time), as uint8.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

#: First environment seed of each split; splits never share a seed (one episode per seed).
SPLIT_SEEDS = {"train": 0, "val": 1_000_000, "test": 2_000_000}
#: Bumped whenever the environments draw other frames for the same recipe, so no cache of older frames is reused
#: (2: household v2 domain; 3: the carried object drawn whole, household.carrying_tile).
FRAMES_VERSION = 3
#: Epsilons of the episode policies, cycled over episodes: expert, partly random, random.
DEFAULT_EPSILONS = (0.0, 0.1, 0.3, 0.6, 1.0)


@dataclass
class DataConfig:
    """Recipe of a labelled dataset: environments, episodes per environment, policy mix, frame size."""
    env_ids: tuple = ("vlmreward/Find-v0", "vlmreward/Lift-v0", "vlmreward/PickPlace-v0",
                      "vlmreward/CartPoleUpright-v0", "vlmreward/MountainCarFlag-v0")
    episodes: int = 200
    max_steps: int = 64
    frame_stride: int = 1
    epsilons: tuple = DEFAULT_EPSILONS
    image_size: int = 84
    resize_mode: str = "squash"
    interpolation: str = "bicubic"
    split: str = "train"
    goal_pool: str = "task_set"  # expert targets: "task_set" (all goals: coverage) or "train" (env default)
    random_states: int = 0  # extra frames of randomised states (env.unwrapped.sample_states)
    env_overrides: dict = field(default_factory=dict)  # per id: {"episodes", "max_steps", "frame_stride"}
    env_kwargs: dict = field(default_factory=dict)  # per id: gym.make keyword arguments (e.g. {"view": "room"})

    def key(self) -> str:
        """Cache key: the recipe and :data:`FRAMES_VERSION`."""
        blob = json.dumps(dict(asdict(self), frames_version=FRAMES_VERSION), sort_keys=True, default=list).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


@dataclass
class FrameDataset:
    """frames uint8 (N,S,S,3); labels bool (N,K) over ``goals``; env_index int64 (N,) into ``env_ids``;
    seed int64 (N,) (episode seed, -1 for sampled states); ``goals`` = the union of the task sets;
    ``env_goals[e]`` = indices of env e's task set; ``train_goal_mask`` bool (K,) (goals in some env's
    train_goals); ``episode_goal`` int64 (N,) index of the episode's goal (-1 for sampled states) and
    ``success`` bool (N,) the environment's own ``info["success"]`` for it (kept to check the labels)."""
    frames: np.ndarray
    labels: np.ndarray
    env_index: np.ndarray
    seed: np.ndarray
    goals: list
    env_ids: list
    env_goals: list
    train_goal_mask: np.ndarray
    episode_goal: np.ndarray | None = None
    success: np.ndarray | None = None

    def __len__(self):
        return len(self.frames)

    def save(self, path):
        """Atomic ``.npz`` (a crash never leaves a half-written cache)."""
        from vlmreward import fileio
        meta = json.dumps({"goals": self.goals, "env_ids": self.env_ids, "env_goals": self.env_goals})
        arrays = dict(frames=self.frames, labels=self.labels, env_index=self.env_index, seed=self.seed,
                      train_goal_mask=self.train_goal_mask, meta=np.array(meta),
                      **{k: getattr(self, k) for k in ("episode_goal", "success") if getattr(self, k) is not None})

        def write(tmp):
            with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a temporary's name
                np.savez(fh, **arrays)
        fileio.write_with(path, write)

    @classmethod
    def load(cls, path):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no dataset file at {path}")
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                return cls(z["frames"], z["labels"], z["env_index"], z["seed"], meta["goals"], meta["env_ids"],
                           meta["env_goals"], z["train_goal_mask"],
                           *(z[k] if k in z.files else None for k in ("episode_goal", "success")))
        except (ValueError, KeyError, OSError, EOFError) as e:
            raise ValueError(f"corrupt or incompatible dataset file {path}: {e}") from e


def default_recipe(split: str = "train", image_size: int = 84, scale: float = 1.0, view: str = "") -> DataConfig:
    """The recipe of the shipped default model's data (``scale`` shrinks it for quick runs and tests; ``view``
    "egocentric" | "room" sets the household frames, "" keeps the environments' default).

    Episodes per environment for the training split; validation and test use a fifth of them and no
    randomised states (they are judged on episode frames, the states an agent visits).
    """
    f = scale * (1.0 if split == "train" else 0.2)
    n = lambda k: max(1, int(round(k * f)))  # noqa: E731
    # the test split (offline evaluation) plays 3x more classic-control episodes: the flag is reached once
    # per successful MountainCar episode, so positives are otherwise too few for a stable AP
    c = 3 if split == "test" else 1
    states = {"vlmreward/Find-v0": {"random_states": n(15000)}, "vlmreward/Lift-v0": {"random_states": n(15000)},
              "vlmreward/PickPlace-v0": {"random_states": n(20000)}} if split == "train" else {}
    household = ("vlmreward/Find-v0", "vlmreward/Lift-v0", "vlmreward/PickPlace-v0")
    return DataConfig(
        env_kwargs={e: {"view": view} for e in household} if view else {},
        episodes=n(600), max_steps=100, image_size=image_size, split=split, random_states=0,
        env_overrides={
            **states,
            "vlmreward/PickPlace-v0": {"episodes": n(400), **states.get("vlmreward/PickPlace-v0", {})},
            "vlmreward/CartPoleUpright-v0": {"episodes": n(100 * c), "max_steps": 300, "frame_stride": 5,
                                             "random_states": n(3000) if split == "train" else 0},
            "vlmreward/MountainCarFlag-v0": {"episodes": n(100 * c), "max_steps": 200, "frame_stride": 4,
                                             "random_states": n(3000) if split == "train" else 0},
        })


def make_env(env_id: str, **kwargs):
    """``gym.make(env_id, render_mode="rgb_array")``; ValueError for an id that is not a vlmreward environment."""
    from vlmreward.envs import declaration
    declaration(env_id)
    return gym.make(env_id, render_mode="rgb_array", **kwargs)


def frame_of(env, observation) -> np.ndarray:
    """The RGB frame of the current state: the observation when it is one (household), else ``render()``."""
    if isinstance(observation, np.ndarray) and observation.dtype == np.uint8 and observation.ndim == 3:
        return observation
    return np.asarray(env.render())


def policy_action(env, epsilon: float, rng: np.random.Generator) -> int:
    """The scripted expert's action (:func:`vlmreward.envs.expert_action`) with probability 1-epsilon, else
    uniform random."""
    from vlmreward.envs import expert_action
    if rng.random() < epsilon:
        return int(env.action_space.sample())
    return int(expert_action(env))


def label_frame(env, goals) -> np.ndarray:
    """bool (len(goals),): ground truth ``goal_success`` of each goal in the current state."""
    u = env.unwrapped
    if hasattr(u, "task_labels") and tuple(goals) == tuple(u.task_set):  # one scan for the whole task set
        return u.task_labels()
    return np.array([bool(u.goal_success(g)) for g in goals], dtype=bool)


def _resize(frames: np.ndarray, cfg: DataConfig) -> np.ndarray:
    from vlmreward.ops import preprocess
    x = preprocess(frames, image_size=cfg.image_size, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3,
                   resize_mode=cfg.resize_mode, interpolation=cfg.interpolation)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def generate(cfg: DataConfig, progress: bool = True) -> FrameDataset:
    """Roll out ``cfg.episodes`` episodes per environment (seeds of ``cfg.split``) and label every frame.

    Raises ValueError for an unknown split or environment id, or if no frame was produced.
    """
    from tqdm.auto import tqdm
    if cfg.split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {cfg.split!r}")
    envs = {env_id: make_env(env_id, **cfg.env_kwargs.get(env_id, {})) for env_id in cfg.env_ids}
    goals, env_goals, train_goals = [], [], set()
    for env in envs.values():
        u = env.unwrapped
        for g in u.task_set:
            if g not in goals:
                goals.append(g)
        env_goals.append([goals.index(g) for g in u.task_set])
        train_goals.update(u.train_goals)
    frames, labels, env_index, seeds, ep_goal, success = [], [], [], [], [], []
    total = sum(cfg.env_overrides.get(e, {}).get("episodes", cfg.episodes) for e in cfg.env_ids)
    bar = tqdm(total=total, desc=f"data[{cfg.split}]", disable=not progress)
    for e, (env_id, env) in enumerate(envs.items()):
        over = cfg.env_overrides.get(env_id, {})
        n_ep, max_steps = over.get("episodes", cfg.episodes), over.get("max_steps", cfg.max_steps)
        stride = over.get("frame_stride", cfg.frame_stride)
        task = env.unwrapped.task_set
        for i in range(n_ep):
            seed = SPLIT_SEEDS[cfg.split] + i
            rng = np.random.default_rng(seed)
            env.action_space.seed(seed)
            eps = cfg.epsilons[i % len(cfg.epsilons)]
            options = {"goal": task[int(rng.integers(len(task)))]} if cfg.goal_pool == "task_set" else None
            obs, info = env.reset(seed=seed, options=options)
            ep_frames, ep_labels = [frame_of(env, obs)], [label_frame(env, task)]
            ep_success = [bool(info.get("success", False))]
            for t in range(max_steps):
                obs, _, terminated, truncated, info = env.step(policy_action(env, eps, rng))
                if (t + 1) % stride == 0 or terminated or truncated:
                    ep_frames.append(frame_of(env, obs))
                    ep_labels.append(label_frame(env, task))
                    ep_success.append(bool(info["success"]))
                if terminated or truncated:
                    break
            frames.append(_resize(np.stack(ep_frames), cfg))
            lab = np.zeros((len(ep_labels), len(goals)), dtype=bool)
            lab[:, env_goals[e]] = np.stack(ep_labels)
            labels.append(lab)
            env_index.append(np.full(len(ep_labels), e, dtype=np.int64))
            seeds.append(np.full(len(ep_labels), seed, dtype=np.int64))
            ep_goal.append(np.full(len(ep_labels), goals.index(env.unwrapped.goal), dtype=np.int64))
            success.append(np.array(ep_success, dtype=bool))
            bar.update()
        n_states = over.get("random_states", cfg.random_states)
        if n_states:
            st_frames, st_labels = env.unwrapped.sample_states(n_states, SPLIT_SEEDS[cfg.split] + 999_999)
            frames.append(_resize(st_frames, cfg))
            lab = np.zeros((len(st_labels), len(goals)), dtype=bool)
            lab[:, env_goals[e]] = st_labels
            labels.append(lab)
            env_index.append(np.full(len(st_labels), e, dtype=np.int64))
            seeds.append(np.full(len(st_labels), -1, dtype=np.int64))
            ep_goal.append(np.full(len(st_labels), -1, dtype=np.int64))
            success.append(np.zeros(len(st_labels), dtype=bool))
    bar.close()
    for env in envs.values():
        env.close()
    if not frames:
        raise ValueError(f"dataset recipe produced no frames (episodes={cfg.episodes}, env_ids={cfg.env_ids})")
    return FrameDataset(np.concatenate(frames), np.concatenate(labels), np.concatenate(env_index),
                        np.concatenate(seeds), goals, list(cfg.env_ids), env_goals,
                        np.array([g in train_goals for g in goals], dtype=bool), np.concatenate(ep_goal),
                        np.concatenate(success))


def load_or_generate(cfg: DataConfig, cache_dir="data/pretrain", progress: bool = True) -> FrameDataset:
    """Cached :func:`generate`: ``<cache_dir>/<split>-<recipe hash>.npz``."""
    path = Path(cache_dir) / f"{cfg.split}-{cfg.key()}.npz"
    if path.is_file():
        return FrameDataset.load(path)
    ds = generate(cfg, progress=progress)
    ds.save(path)
    return ds
