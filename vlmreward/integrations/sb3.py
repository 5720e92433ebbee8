"""stable-baselines3: a ``VecEnv`` over gymnasium vector envs, and a callback logging the ground truth.

stable-baselines3 (SB3) steps a ``VecEnv`` in SAME-STEP style: when the episode of a sub-environment ends, the
observation returned for it is already the first observation of its next episode, the last observation is in
``infos[i]["terminal_observation"]``, and ``infos[i]["TimeLimit.truncated"]`` marks an episode cut by a time limit.
gymnasium vector envs, ``VectorVLMRewardWrapper`` included, autoreset in NEXT_STEP style: the step after an
episode end is a reset step that ignores its action. :class:`SB3VecEnv` converts one into the other by resetting
the finished sub-environments right after the step that ended them (``reset(options={"reset_mask": done})``), so
the vector env never takes a reset step: every transition SB3 sees is a real step with the reward the vector env
gave it (with ``VectorVLMRewardWrapper``: the VLM reward of the frame after the action; no reset observation is
ever scored).

Needs stable-baselines3 (``pip install "vlmreward[sb3]"``); see docs/integrations.md.
"""
from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

try:
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import is_wrapped
    from stable_baselines3.common.vec_env import VecEnv
except ImportError as e:  # SB3 is an optional extra
    raise ImportError(f"vlmreward.integrations.sb3 needs stable-baselines3 ({e}): install it with "
                      f"pip install 'vlmreward[sb3]' (or pip install stable-baselines3==2.9.2)") from e

__all__ = ["GroundTruthCallback", "SB3VecEnv"]


def _split_info(info: dict, num_envs: int) -> list[dict]:
    """Per-sub-env info dicts from a gymnasium vector ``info``: sub-env i gets the entries its "_key" mask
    marks (all of them for an entry without a mask), nested dicts likewise, numpy scalars as Python scalars."""
    out: list[dict] = [{} for _ in range(num_envs)]
    for key, value in info.items():
        if isinstance(key, str) and key.startswith("_") and key[1:] in info:
            continue  # a mask
        mask = info.get(f"_{key}")
        parts = _split_info(value, num_envs) if isinstance(value, dict) else None
        for i in range(num_envs):
            if mask is not None and not mask[i]:
                continue
            out[i][key] = parts[i] if parts is not None else _item(value[i])
    return out


def _item(value):
    """A numpy scalar as a Python scalar, an array as a copy, anything else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    return np.array(value, copy=True) if isinstance(value, np.ndarray) else value


def _row(obs, i: int):
    """Sub-env i's observation (a copy) from a batched observation (array, dict or tuple of them)."""
    if isinstance(obs, dict):
        return {k: _row(v, i) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_row(v, i) for v in obs)
    return np.array(obs[i], copy=True)


def _merge(mask: np.ndarray, new, old):
    """A fresh batched observation: ``new``'s rows where ``mask``, ``old``'s elsewhere (new=None: a copy of old)."""
    if isinstance(old, dict):
        return {k: _merge(mask, None if new is None else new[k], v) for k, v in old.items()}
    if isinstance(old, tuple):
        return tuple(_merge(mask, None if new is None else new[j], o) for j, o in enumerate(old))
    out = np.array(old, copy=True)
    if new is not None:
        out[mask] = np.asarray(new)[mask]
    return out


def _same_rows(mask: np.ndarray, a, b) -> bool:
    """Whether two batched observations agree on the rows where ``mask`` is set."""
    if isinstance(b, dict):
        return all(_same_rows(mask, a[k], b[k]) for k in b)
    if isinstance(b, tuple):
        return all(_same_rows(mask, x, y) for x, y in zip(a, b))
    return np.array_equal(np.asarray(a)[mask], np.asarray(b)[mask])


class SB3VecEnv(VecEnv):
    """A stable-baselines3 ``VecEnv`` over a gymnasium vector env in NEXT_STEP autoreset.

    Args:
        vector_env: a ``gymnasium.vector.VectorEnv`` with autoreset_mode NEXT_STEP whose ``reset`` takes
            ``options={"reset_mask": bool (num_envs,)}``: a ``SyncVectorEnv``, an ``AsyncVectorEnv`` with
            shared memory (the default), or vector wrappers over one, e.g. ``VectorVLMRewardWrapper``. Over any
            other vector env, each masked reset checks that the other sub-envs' observations did not change.

    Spaces: ``observation_space`` and ``action_space`` are the vector env's single spaces; a Dict observation
    (the VLM wrappers' {"observation", "goal_id", ["goal_embedding"]}) is a dict of (num_envs, ...) arrays.

    ``step(actions)`` -> (observations, rewards float32 (num_envs,), dones bool (num_envs,), infos), with
    dones = terminated | truncated and infos a list of num_envs dicts: sub-env i's entries of the vector
    ``info`` (those its "_key" masks mark; nested dicts likewise; numpy scalars as Python scalars), plus
    "TimeLimit.truncated" (truncated and not terminated) and, when done, "terminal_observation" (the episode's
    last observation). The observation of a done sub-env is the first of its next episode; its reset info is
    in ``reset_infos[i]``. The finished sub-envs are reset (without seed or options) before ``step`` returns.

    ``reset()`` resets every sub-env with the seeds of ``seed()`` and the options of ``set_options()``, both
    used once, as in SB3; gymnasium passes one options dict to all sub-envs, so the options must be equal.
    ``get_attr`` / ``set_attr`` / ``env_method`` / ``env_is_wrapped`` act on the sub-envs with gymnasium's
    semantics (``get_wrapper_attr`` / ``set_wrapper_attr``: the attribute is found, or set, where it is
    defined along the wrapper chain). With a ``SyncVectorEnv`` they reach the sub-envs directly; otherwise
    through the vector env's ``get_attr`` / ``set_attr`` / ``call`` (which calls a callable attribute), for all
    sub-envs only: a subset of indices for ``set_attr`` / ``env_method`` raises NotImplementedError, and
    ``env_is_wrapped`` AttributeError (SB3's ``VecMonitor`` then assumes no ``Monitor`` inside).
    ``render()`` tiles the sub-envs' frames (render_mode "rgb_array"). ``close()`` closes the vector env.

    Raises:
        RuntimeError (``step``): a vector env other than Sync/AsyncVectorEnv changed the observations of sub-envs
            outside the reset mask (it does not honour reset_mask, as CartPole-v1's own vector env).
        TypeError: ``vector_env`` is not a gymnasium VectorEnv.
        ValueError: another autoreset mode; an AsyncVectorEnv without shared memory (gymnasium 1.4 keeps its
            autoreset flag through a masked reset, so a sub-env that ended by itself would be reset once more on
            the next step, which would score a reset observation).
    """

    def __init__(self, vector_env: gym.vector.VectorEnv):
        if not isinstance(vector_env, gym.vector.VectorEnv):
            raise TypeError(f"vector_env must be a gymnasium.vector.VectorEnv (e.g. gym.make_vec(...) or a "
                            f"VectorVLMRewardWrapper), got {type(vector_env).__name__}")
        mode = vector_env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
        if AutoresetMode(mode) != AutoresetMode.NEXT_STEP:
            raise ValueError(f"SB3VecEnv needs a vector env with autoreset_mode NEXT_STEP, got {mode}")
        base = vector_env.unwrapped
        if isinstance(base, AsyncVectorEnv) and not base.shared_memory:
            raise ValueError("SB3VecEnv needs an AsyncVectorEnv with shared_memory=True: gymnasium 1.4 keeps the "
                             "autoreset flag of a sub-env through reset(options={'reset_mask': ...}) without shared "
                             "memory, so that sub-env would be reset a second time")
        self.venv = vector_env
        self._sub_envs = list(base.envs) if isinstance(base, SyncVectorEnv) else None
        # gymnasium's Sync/AsyncVectorEnv honour reset_mask; other vector envs may reset every sub-env (e.g.
        # CartPole-v1's own vector env): checked on each masked reset
        self._check_reset_mask = not isinstance(base, (SyncVectorEnv, AsyncVectorEnv))
        self._actions = None
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)

    # ----- stepping ------------------------------------------------------------------------------------------
    def reset(self):
        options = self._options[0]
        if any(o != options for o in self._options[1:]):
            raise ValueError("gymnasium vector envs pass one options dict to every sub-environment; set_options() "
                             "was given different options per sub-environment")
        seeds = list(self._seeds) if any(s is not None for s in self._seeds) else None
        obs, info = self.venv.reset(seed=seeds, options=dict(options) if options else None)
        self.reset_infos = _split_info(info, self.num_envs)
        self._reset_seeds()
        self._reset_options()
        self._actions = None
        return _merge(np.zeros(self.num_envs, bool), None, obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() needs a step_async(actions) first")
        actions, self._actions = self._actions, None
        obs, rewards, terminated, truncated, info = self.venv.step(actions)
        terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
        dones = terminated | truncated
        infos = _split_info(info, self.num_envs)
        for i, info_i in enumerate(infos):
            info_i["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
        reset_obs = None
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = _row(obs, i)
            reset_obs, reset_info = self.venv.reset(options={"reset_mask": dones.copy()})
            if self._check_reset_mask and not _same_rows(~dones, reset_obs, obs):
                raise RuntimeError(f"{type(self.venv.unwrapped).__name__} changed the observations of sub-envs "
                                   f"outside options['reset_mask'] on reset: SB3VecEnv needs a vector env that resets "
                                   f"only the masked sub-envs, e.g. gym.make_vec(..., vectorization_mode='sync')")
            reset_infos = _split_info(reset_info, self.num_envs)
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = reset_infos[i]
        return _merge(dones, reset_obs, obs), np.asarray(rewards, np.float32).copy(), dones, infos

    def close(self) -> None:
        self.venv.close()

    def get_images(self):
        if self.render_mode != "rgb_array":
            warnings.warn(f"get_images() needs sub-environments with render_mode 'rgb_array', got {self.render_mode!r}")
            return [None] * self.num_envs
        return list(self.venv.render())

    # ----- sub-environment access ----------------------------------------------------------------------------
    def _all(self, indices) -> bool:
        return list(self._get_indices(indices)) == list(range(self.num_envs))

    def _local(self, what: str, indices):
        """The sub-envs at ``indices`` when they live in this process, else NotImplementedError for a subset."""
        if self._sub_envs is not None:
            return [self._sub_envs[i] for i in self._get_indices(indices)]
        if what and not self._all(indices):
            raise NotImplementedError(f"{what} for a subset of sub-environments needs a gymnasium SyncVectorEnv "
                                      f"underneath; {type(self.venv.unwrapped).__name__} reaches all of them only")
        return None

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        envs = self._local("", indices)
        if envs is not None:
            return [env.get_wrapper_attr(attr_name) for env in envs]
        values = self.venv.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        envs = self._local("set_attr", indices)
        if envs is None:
            self.venv.set_attr(attr_name, [value] * self.num_envs)  # a list: one value per sub-env
            return
        for env in envs:
            env.set_wrapper_attr(attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        envs = self._local("env_method", indices)
        if envs is None:
            return list(self.venv.call(method_name, *method_args, **method_kwargs))
        return [env.get_wrapper_attr(method_name)(*method_args, **method_kwargs) for env in envs]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices=None) -> list[bool]:
        if self._sub_envs is None:  # AttributeError: SB3's VecMonitor takes it for "no Monitor inside"
            raise AttributeError(
                f"env_is_wrapped needs the sub-environments in this process (gymnasium SyncVectorEnv), not "
                f"{type(self.venv.unwrapped).__name__}; wrap SB3VecEnv in stable_baselines3's VecMonitor for "
                f"episode statistics (evaluate_policy then does not ask)")
        return [is_wrapped(env, wrapper_class) for env in self._local("", indices)]


class GroundTruthCallback(BaseCallback):
    """Logs each finished episode's ground truth next to its VLM return, and keeps the values.

    Reads ``infos[i]`` at every step (SB3VecEnv over ``VectorVLMRewardWrapper``, or SB3's own VecEnvs over
    ``VLMRewardWrapper``): "vlm_reward" (the VLM reward of the step), "env_reward" (the environment's own reward;
    keep_env_reward=True) and, from environments with ground truth, "gt_success" (the goal holds after the step).
    For every finished episode (``dones[i]``) it appends to the lists

    - ``vlm_returns``: sum of "vlm_reward" (float), the return the agent is trained on (before any VecNormalize);
    - ``gt_returns``: sum of "env_reward" (float), the ground-truth return;
    - ``gt_successes``: "gt_success" held at some step of the episode (bool; goal-reaching domains: the episode
      reached its goal);
    - ``gt_success_fractions``: fraction of the episode's steps with "gt_success" (float; per-step goals such as
      "the pole is upright");
    - ``episode_lengths`` (int) and ``episode_end_timesteps`` (``model.num_timesteps`` at the end, int);

    (the two success lists only when the infos have "gt_success"), and at the end of every rollout records in
    SB3's logger the means over the last ``window`` finished episodes: ``rollout/vlm_return``,
    ``rollout/gt_return``, ``rollout/gt_success``, ``rollout/gt_success_fraction``, and ``rollout/gt_episodes``
    (episodes finished so far). Episodes still running when ``learn`` starts afresh (reset_num_timesteps=True,
    which resets the env) are dropped.

    Args:
        window: number of recent episodes the logged means cover (>= 1; SB3's own ep_rew_mean uses 100).
        verbose: SB3's verbosity (1 prints each finished episode).

    Raises:
        ValueError: window < 1.
        KeyError: an info without "vlm_reward" or "env_reward" (the environment is not wrapped by a VLM reward
            wrapper with keep_env_reward=True).
    """

    def __init__(self, window: int = 100, verbose: int = 0):
        super().__init__(verbose)
        if int(window) < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = int(window)
        self.vlm_returns: list[float] = []
        self.gt_returns: list[float] = []
        self.gt_successes: list[bool] = []
        self.gt_success_fractions: list[float] = []
        self.episode_lengths: list[int] = []
        self.episode_end_timesteps: list[int] = []
        self._vlm = None

    def _on_training_start(self) -> None:
        n = self.training_env.num_envs
        if self._vlm is None or len(self._vlm) != n or self.locals.get("reset_num_timesteps", True):
            self._vlm, self._gt = np.zeros(n), np.zeros(n)
            self._success_steps, self._length = np.zeros(n, np.int64), np.zeros(n, np.int64)

    def _on_step(self) -> bool:
        for i, (info, done) in enumerate(zip(self.locals["infos"], self.locals["dones"])):
            for key in ("vlm_reward", "env_reward"):
                if key not in info:
                    raise KeyError(f"GroundTruthCallback needs info[{key!r}] at every step: wrap the environment "
                                   f"with VLMRewardWrapper / VectorVLMRewardWrapper (keep_env_reward=True)")
            self._vlm[i] += float(info["vlm_reward"])
            self._gt[i] += float(info["env_reward"])
            self._success_steps[i] += bool(info.get("gt_success", False))
            self._length[i] += 1
            if done:
                self._end_episode(i, "gt_success" in info)
        return True

    def _end_episode(self, i: int, has_gt: bool) -> None:
        self.vlm_returns.append(float(self._vlm[i]))
        self.gt_returns.append(float(self._gt[i]))
        if has_gt:
            self.gt_successes.append(bool(self._success_steps[i] > 0))
            self.gt_success_fractions.append(float(self._success_steps[i] / self._length[i]))
        self.episode_lengths.append(int(self._length[i]))
        self.episode_end_timesteps.append(int(self.num_timesteps))
        if self.verbose >= 1:
            print(f"episode {len(self.vlm_returns)}: vlm_return {self._vlm[i]:.3g} gt_return {self._gt[i]:.3g} "
                  f"length {self._length[i]} at {self.num_timesteps} steps")
        self._vlm[i] = self._gt[i] = self._success_steps[i] = self._length[i] = 0

    def _on_rollout_end(self) -> None:
        if not self.vlm_returns:
            return
        recent = slice(-self.window, None)
        self.logger.record("rollout/vlm_return", float(np.mean(self.vlm_returns[recent])))
        self.logger.record("rollout/gt_return", float(np.mean(self.gt_returns[recent])))
        if self.gt_successes:
            self.logger.record("rollout/gt_success", float(np.mean(self.gt_successes[recent])))
            self.logger.record("rollout/gt_success_fraction", float(np.mean(self.gt_success_fractions[recent])))
        self.logger.record("rollout/gt_episodes", len(self.vlm_returns))
