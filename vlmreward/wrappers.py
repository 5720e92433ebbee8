"""Gymnasium wrappers that replace an environment's reward by the VLM reward (single and vector envs).

Baumli et al. (arXiv 2312.09187, eqs. 1-2): the reward of a step is r = 1[p(goal | o_{t+1}) > beta] for the
frame o_{t+1} AFTER the action, and the episode ends as soon as r = 1 (``terminate_on_success``).
The frame is the observation when the observation is an RGB image (uint8 (H, W, 3)); otherwise it is
``env.render()`` (render_mode "rgb_array"), called once per step. The goal is given to the policy in the
observation (its index in ``reward_model.bank.goals`` and optionally its text embedding).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorWrapper
from gymnasium.vector.utils import batch_space

from vlmreward.envs import GOAL_REACHING, ends_on_success


def _is_frame_space(space) -> bool:
    return (isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
            and space.shape[-1] == 3)


FRAME_SOURCES = ("auto", "observation", "render")
MIN_FRAME_SIDE = 16  # "auto": an observation-as-frame with a smaller side is taken for a non-picture (warning)


def _frames_from_observation(frame_source: str, observation_space, render_mode, what: str) -> bool:
    """Where the wrappers read the frame to score: True for the observation, False for ``render()``.

    "observation": the observation, which must be uint8 (H, W, 3); "render": ``render()``, which needs
    render_mode "rgb_array"; "auto": the observation when it is uint8 (H, W, 3), else ``render()``, with a
    UserWarning when that observation has a side under MIN_FRAME_SIDE pixels (e.g. MiniGrid's ImgObsWrapper
    grid encoding, uint8 (7, 7, 3) of object / colour / state indices, is not a picture).
    Raises ValueError for another frame_source, or a source the environment cannot provide.
    """
    if frame_source not in FRAME_SOURCES:
        raise ValueError(f"frame_source must be one of {FRAME_SOURCES}, got {frame_source!r}")
    is_frame = _is_frame_space(observation_space)
    if frame_source == "observation" and not is_frame:
        raise ValueError(f"frame_source='observation' needs uint8 RGB observations (H, W, 3), got {observation_space}")
    from_obs = frame_source == "observation" or (frame_source == "auto" and is_frame)
    if not from_obs and render_mode != "rgb_array":
        if frame_source == "render":
            raise ValueError(f"frame_source='render' needs {what} made with render_mode='rgb_array' "
                             f"(got render_mode={render_mode!r})")
        raise ValueError(f"no frames to score from {what}: the observations are not RGB frames (uint8 (H, W, 3)) "
                         f"and render_mode is {render_mode!r}; make it with render_mode='rgb_array'")
    if frame_source == "auto" and from_obs and min(observation_space.shape[:2]) < MIN_FRAME_SIDE:
        warnings.warn(f"the observation of {what}, uint8 {observation_space.shape}, is scored as the frame but is "
                      f"smaller than {MIN_FRAME_SIDE} pixels a side: it may not be a picture (e.g. MiniGrid's "
                      f"ImgObsWrapper grid encoding). Pass frame_source='render' (render_mode='rgb_array') to score "
                      f"rendered frames, or frame_source='observation' if it is a picture", UserWarning, stacklevel=3)
    return from_obs


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB images (H, W, 3), got dtype {frames.dtype} and shape "
                         f"{frames.shape[1:] if frames.ndim else frames.shape}")
    return frames


class _GoalConditioning:
    """Goal bookkeeping shared by both wrappers: validation, sampling, ids, policy observation."""

    def _init_goals(self, reward_model, goal, goal_embedding: bool, base_observation_space, goal_aware: bool):
        if not (goal is None or isinstance(goal, str) or callable(goal)):
            raise TypeError(f"goal must be None, a str or a callable(rng) -> str, got {type(goal).__name__}")
        if goal is None and not goal_aware:
            raise ValueError("goal=None needs an environment that picks goals (vlmreward envs: info['goal']); "
                             "pass goal='...' or goal=callable(rng) for other environments")
        self.reward_model = reward_model
        self.goal_arg = goal
        self._goal_ids = {g: i for i, g in enumerate(reward_model.bank.goals)}
        self._goal_rng = np.random.default_rng()
        self.goal_embedding = bool(goal_embedding)
        if isinstance(goal, str):
            self._goal_id(goal)
        fields = {"observation": base_observation_space, "goal_id": spaces.Discrete(len(self._goal_ids))}
        if self.goal_embedding:
            emb = reward_model.bank.goal_embeddings
            self._embeddings = emb.detach().float().cpu().numpy()
            fields["goal_embedding"] = spaces.Box(-np.inf, np.inf, self._embeddings.shape[1:], np.float32)
        return spaces.Dict(fields)

    def _goal_id(self, goal: str) -> int:
        try:
            return self._goal_ids[goal]
        except (KeyError, TypeError):
            raise ValueError(f"goal {goal!r} is not in the reward model's goal bank "
                             f"({len(self._goal_ids)} goals, e.g. {next(iter(self._goal_ids))!r})") from None

    def _sample_goal(self) -> str | None:
        if self.goal_arg is None or isinstance(self.goal_arg, str):
            return self.goal_arg
        goal = self.goal_arg(self._goal_rng)
        self._goal_id(goal)
        return goal

    def _policy_obs(self, obs, goal_ids):
        out = {"observation": obs, "goal_id": goal_ids}
        if self.goal_embedding:
            out["goal_embedding"] = self._embeddings[goal_ids]
        return out

    @torch.inference_mode()
    def _score(self, frames: np.ndarray, goal_ids: np.ndarray | None):
        """VLM probabilities and rewards, float64 numpy, in ONE reward-model call: (B,) for goal_ids (B,),
        (B, G) for every goal of the bank when goal_ids is None."""
        ids = None if goal_ids is None else torch.as_tensor(goal_ids, dtype=torch.int64)
        out = self.reward_model(_check_frames(frames), ids)
        shape = (len(out.probs), -1) if goal_ids is None else (-1,)
        return (out.probs.detach().double().cpu().numpy().reshape(shape),
                out.rewards.detach().double().cpu().numpy().reshape(shape))


class VLMRewardWrapper(_GoalConditioning, gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Replaces the reward of a single environment by the VLM reward of the frame after each action.

    Args:
        env: a gymnasium env whose observation is an RGB frame uint8 (H, W, 3), or with render_mode "rgb_array".
        reward_model: a ``vlmreward.RewardModel`` (called as ``reward_model(frames (1,H,W,3), goal_ids (1,))``).
        goal: None (the environment's own goal, vlmreward envs), a goal string, or ``callable(rng) -> str``
            sampled at each reset; every goal must be in ``reward_model.bank.goals``.
        terminate_on_success: end the episode when p(goal | frame) > threshold. None (default): as the
            environment declares (``vlmreward.envs.ends_on_success``): yes for goal-reaching environments (the
            paper's tasks, and any environment that declares nothing), no for per-step ones (CartPoleUpright,
            MountainCarFlag: rewarded every step in the goal state; ending there would end every episode at
            its first step).
        keep_env_reward: put the environment's own reward in ``info["env_reward"]``.
        goal_embedding: add the goal's text embedding (``bank.goal_embeddings`` row, float32 (D,)) to the
            observation.
        frame_source: the frame scored after each action: "auto" (the observation when it is uint8 (H, W, 3),
            else ``env.render()``; warns when such an observation is under MIN_FRAME_SIDE = 16 pixels a side, as
            MiniGrid's ImgObsWrapper grid encoding is), "observation" or "render" (render_mode "rgb_array").
            With frames from ``render()`` the wrapper declares only the "rgb_array" render mode.

    The constructor arguments are recorded (``gymnasium.utils.RecordConstructorArgs``, the reward model by
    reference), so ``env.spec`` re-creates the wrapped env (``gymnasium.make(env.spec)``, ``check_env``).

    Observation: Dict {"observation": env's observation, "goal_id": int, ["goal_embedding": (D,)]}.
    Reward: the VLM reward (float). ``info`` adds "vlm_prob", "vlm_reward", "goal", "gt_success" (exact
    ground truth when the environment has ``goal_success``) and "env_reward".
    Raises: ValueError for an env without frames, a bad ``frame_source``, a goal outside the goal bank or the
    env's task set, or frames that are not uint8 (H, W, 3); TypeError for a bad ``goal`` argument.
    """

    def __init__(self, env: gym.Env, reward_model, goal: None | str | Callable = None, *,
                 terminate_on_success: bool | None = None, keep_env_reward: bool = True,
                 goal_embedding: bool = False, frame_source: str = "auto"):
        gym.utils.RecordConstructorArgs.__init__(
            self, _disable_deepcopy=True, reward_model=reward_model, goal=goal,
            terminate_on_success=terminate_on_success, keep_env_reward=keep_env_reward,
            goal_embedding=goal_embedding, frame_source=frame_source)
        gym.Wrapper.__init__(self, env)
        self.frame_source = frame_source
        self._frame_is_obs = _frames_from_observation(frame_source, env.observation_space, env.render_mode, str(env))
        if not self._frame_is_obs:
            self.metadata = {**env.metadata, "render_modes": ["rgb_array"]}
        self._goal_aware = hasattr(env.unwrapped, "goal_success")
        self.observation_space = self._init_goals(reward_model, goal, goal_embedding, env.observation_space,
                                                  self._goal_aware)
        if isinstance(goal, str) and self._goal_aware and goal not in env.unwrapped.task_set:
            raise ValueError(f"goal {goal!r} is not in the environment's task set")
        self.terminate_on_success = (ends_on_success(env) if terminate_on_success is None
                                     else bool(terminate_on_success))
        self.keep_env_reward = bool(keep_env_reward)
        self.goal: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._goal_rng = np.random.default_rng(seed)
        options = dict(options or {})
        goal = options.pop("goal", None) or self._sample_goal()
        if goal is not None and self._goal_aware:
            options["goal"] = goal
        obs, info = self.env.reset(seed=seed, options=options or None)
        self.goal = self.env.unwrapped.goal if self._goal_aware else goal
        info["goal"] = self.goal
        return self._policy_obs(obs, self._goal_id(self.goal)), info

    def step(self, action):
        obs, env_reward, terminated, truncated, info = self.env.step(action)
        gid = self._goal_id(self.goal)
        frame = obs if self._frame_is_obs else self.env.render()
        probs, rewards = self._score(np.asarray(frame)[None], np.array([gid]))
        prob, reward = float(probs[0]), float(rewards[0])
        if self.terminate_on_success and prob > self.reward_model.threshold:
            terminated = True
        info.update(vlm_prob=prob, vlm_reward=reward, goal=self.goal)
        if self._goal_aware:
            info["gt_success"] = bool(self.env.unwrapped.goal_success(self.goal))
        if self.keep_env_reward:
            info["env_reward"] = float(env_reward)
        return self._policy_obs(obs, gid), reward, bool(terminated), bool(truncated), info


def _vector_ends_on_success(env: gym.vector.VectorEnv) -> bool:
    """The sub-environments' declared style (:func:`vlmreward.envs.ends_on_success`); goal-reaching when they
    declare nothing."""
    try:
        styles = set(env.get_attr("reward_style"))
    except AttributeError:
        return True
    if len(styles) != 1:
        raise ValueError(f"the sub-environments declare different reward styles {sorted(styles)}")
    return styles.pop() == GOAL_REACHING


def _require_next_step(env: gym.vector.VectorEnv, who: str) -> None:
    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if AutoresetMode(mode) != AutoresetMode.NEXT_STEP:
        raise ValueError(f"{who} needs autoreset_mode NEXT_STEP, got {mode}")


def _reset_mask(options, num_envs: int) -> np.ndarray:
    """bool (num_envs,): the sub-envs a vector ``reset(options=...)`` resets (all without a "reset_mask")."""
    if not options or "reset_mask" not in options:
        return np.ones(num_envs, bool)
    return np.asarray(options["reset_mask"], bool)


def _select(mask: np.ndarray, new, old):
    """Per-environment choice between two batched observations (arrays, dicts or tuples of them)."""
    if isinstance(old, dict):
        return {k: _select(mask, new[k], old[k]) for k in old}
    if isinstance(old, tuple):
        return tuple(_select(mask, n, o) for n, o in zip(new, old))
    out = np.array(old, copy=True)
    out[mask] = np.asarray(new)[mask]
    return out


def _replace_info(info: dict, new: dict, mask: np.ndarray) -> dict:
    """Vector ``info`` where the environments in ``mask`` carry ``new``'s entries (gymnasium's "_key" masks)."""
    info = dict(info)
    for k in [k for k in info if not k.startswith("_")]:  # drop the discarded step's entries
        if isinstance(info[k], dict):
            info[k] = _replace_info(info[k], {}, mask)
        if f"_{k}" in info:
            info[f"_{k}"] = info[f"_{k}"] & ~mask
    for k, v in new.items():
        if k.startswith("_"):
            continue
        m = new.get(f"_{k}", np.ones(len(mask), bool)) & mask
        if isinstance(v, dict):
            info[k] = _replace_info(info.get(k, {}), v, mask)
            continue
        if k in info:
            arr = np.asarray(info[k])
            if not np.can_cast(np.asarray(v).dtype, arr.dtype):
                arr = arr.astype(object)
            arr = arr.copy()
            arr[m] = np.asarray(v)[m]
        else:
            arr = np.asarray(v).copy()
        info[k] = arr
        info[f"_{k}"] = info.get(f"_{k}", np.zeros(len(mask), bool)) | m
    return info


class VectorVLMRewardWrapper(_GoalConditioning, VectorWrapper, gym.utils.RecordConstructorArgs):
    """The VLM reward for all sub-environments of a vector env, in ONE batched reward-model call per step.

    Same arguments, observation and ``info`` keys as :class:`VLMRewardWrapper`, batched ((B,) arrays with
    gymnasium's "_key" masks). Frames (``frame_source``, as :class:`VLMRewardWrapper`): the observations when they
    are RGB frames, else ``vector_env.render()`` (async sub-envs render in parallel), once per step.

    Autoreset (gymnasium's NEXT_STEP, the only mode accepted): the step after a terminal step is a reset step;
    its reward is 0 and no VLM reward is computed for it. When the VLM ends an episode (terminate_on_success)
    the base vector env does not know it; on the next step that sub-env is reset through
    ``reset(options={"reset_mask": ...})`` and the step it took is discarded, so the agent sees exactly a
    NEXT_STEP reset step (reset observation, reward 0, not terminated). Known gymnasium 1.4 limitation:
    AsyncVectorEnv with shared_memory=False does not clear its autoreset flag on a masked reset, so if that
    discarded step also ended the base episode, the sub-env is reset once more on the following step.

    Goals: None reads each sub-env's goal from ``info["goal"]``; a string or ``callable(rng)`` sets the
    sub-envs' ``goal_pool`` (vlmreward envs sample their next goal from it) before each reset.
    ``score_all_goals``: the same single model call scores every goal of the bank (the image tower runs once
    per frame either way): ``info["vlm_rewards_all"]`` (B, G) float64 holds the reward of each goal in the
    reward model's mode and ``info["vlm_success_all"]`` (B, G) bool where p(goal | frame) > threshold, i.e.
    which goals the frame achieves, for hindsight relabelling, and ``info["vlm_probs_all"]`` (B, G) float64
    p(goal | frame) of every goal (all 0 on reset steps).
    Raises ValueError for another autoreset mode, an env without frames, a bad ``frame_source``, goals outside
    the goal bank.
    """

    def __init__(self, env: gym.vector.VectorEnv, reward_model, goal: None | str | Callable = None, *,
                 terminate_on_success: bool | None = None, keep_env_reward: bool = True,
                 goal_embedding: bool = False, score_all_goals: bool = False, frame_source: str = "auto"):
        gym.utils.RecordConstructorArgs.__init__(
            self, _disable_deepcopy=True, reward_model=reward_model, goal=goal,
            terminate_on_success=terminate_on_success, keep_env_reward=keep_env_reward,
            goal_embedding=goal_embedding, score_all_goals=score_all_goals, frame_source=frame_source)
        VectorWrapper.__init__(self, env)
        _require_next_step(env, "VectorVLMRewardWrapper")
        self.frame_source = frame_source
        self._frame_is_obs = _frames_from_observation(frame_source, env.single_observation_space, env.render_mode,
                                                      "the sub-environments")
        self.single_observation_space = self._init_goals(reward_model, goal, goal_embedding,
                                                         env.single_observation_space, goal_aware=True)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.terminate_on_success = (_vector_ends_on_success(env) if terminate_on_success is None
                                     else bool(terminate_on_success))
        self.keep_env_reward = bool(keep_env_reward)
        self.score_all_goals = bool(score_all_goals)
        n = self.num_envs
        self.goals = np.full(n, None, dtype=object)
        self._needs_reset = np.zeros(n, bool)  # next step is a reset step (base or VLM termination)
        self._vlm_ended = np.zeros(n, bool)  # ... of which the base env does not know

    def _assign_goals(self, mask: np.ndarray) -> None:
        """Sample this wrapper's goals for the sub-envs in ``mask`` and hand them to their next reset."""
        if self.goal_arg is None:
            return
        for i in np.flatnonzero(mask):
            self.goals[i] = self._sample_goal()
        self.env.set_attr("goal_pool", [(g,) for g in self.goals])

    def _read_goals(self, info: dict) -> np.ndarray:
        if "goal" in info:
            has = info.get("_goal", np.ones(self.num_envs, bool))
            self.goals[has] = np.asarray(info["goal"], dtype=object)[has]
        elif self.goal_arg is None:
            raise ValueError("goal=None needs sub-environments that report info['goal'] (vlmreward envs)")
        return np.array([self._goal_id(g) for g in self.goals], dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self._goal_rng = np.random.default_rng(seed if isinstance(seed, int) else [s for s in seed if s is not None])
        mask = _reset_mask(options, self.num_envs)  # a masked reset leaves the running episodes' goals alone
        self._assign_goals(mask)
        obs, info = self.env.reset(seed=seed, options=options)
        self._needs_reset[mask] = False
        self._vlm_ended[mask] = False
        return self._policy_obs(obs, self._read_goals(info)), info

    def step(self, actions):
        reset_step, vlm_ended = self._needs_reset.copy(), self._vlm_ended.copy()
        if reset_step.any():
            self._assign_goals(reset_step)
        obs, env_rewards, terminated, truncated, info = self.env.step(actions)
        frames = None if self._frame_is_obs else np.stack(self.env.render())
        if vlm_ended.any():  # discard the step these sub-envs took and show their reset instead
            r_obs, r_info = self.env.reset(options={"reset_mask": vlm_ended})
            obs = _select(vlm_ended, r_obs, obs)
            info = _replace_info(info, r_info, vlm_ended)
            env_rewards = np.where(vlm_ended, 0.0, env_rewards)
            terminated, truncated = terminated & ~vlm_ended, truncated & ~vlm_ended
        if self._frame_is_obs:
            frames = obs
        goal_ids = self._read_goals(info)

        probs = np.zeros(self.num_envs)
        rewards = np.zeros(self.num_envs)
        rewards_all = np.zeros((self.num_envs, len(self.reward_model.bank))) if self.score_all_goals else None
        success_all = None if rewards_all is None else np.zeros(rewards_all.shape, bool)
        probs_all = None if rewards_all is None else np.zeros(rewards_all.shape)
        active = ~reset_step
        if active.any() and self.score_all_goals:  # same single call, every goal; own goal's column picked
            p_all, rewards_all[active] = self._score(np.asarray(frames)[active], None)
            probs_all[active] = p_all
            success_all[active] = p_all > self.reward_model.threshold
            rows, own = np.arange(int(active.sum())), goal_ids[active]
            probs[active], rewards[active] = p_all[rows, own], rewards_all[active][rows, own]
        elif active.any():
            probs[active], rewards[active] = self._score(np.asarray(frames)[active], goal_ids[active])
        success = active & (probs > self.reward_model.threshold)
        if self.terminate_on_success:
            self._vlm_ended = success & ~terminated & ~truncated
            terminated = terminated | success
        self._needs_reset = terminated | truncated

        ones = np.ones(self.num_envs, bool)
        info = dict(info, vlm_prob=probs, _vlm_prob=ones, vlm_reward=rewards.copy(), _vlm_reward=ones,
                    goal=self.goals.copy(), _goal=ones)
        if "success" in info:
            info["gt_success"] = np.asarray(info["success"], bool) & info.get("_success", ones)
            info["_gt_success"] = ones
        if self.keep_env_reward:
            info["env_reward"], info["_env_reward"] = np.asarray(env_rewards, np.float64), ones
        if rewards_all is not None:
            info["vlm_rewards_all"], info["_vlm_rewards_all"] = rewards_all, ones
            info["vlm_success_all"], info["_vlm_success_all"] = success_all, ones
            info["vlm_probs_all"], info["_vlm_probs_all"] = probs_all, ones
        return self._policy_obs(obs, goal_ids), rewards, terminated, truncated, info


class NoSuccessTermination(gym.Wrapper):
    """Drops an environment's own termination on ground-truth success (``info["success"]``; the household
    environments end episodes there), so that under a VLM reward episodes end on VLM success or timeout only
    (Baumli et al.): ground truth never reaches training through termination. Apply it below the VLM wrapper
    (e.g. ``gym.make_vec(..., wrappers=[NoSuccessTermination])``). A termination the goal does not decide
    (``info["attempts_spent"]``, household ``max_attempts``) is kept, success or not."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        own = info.get("success", False) and not info.get("attempts_spent", False)
        return obs, reward, terminated and not own, truncated, info


class TerminalReward(VectorWrapper):
    """Keeps a vector env's reward on the steps where the environment itself ends the episode (``terminated``), 0
    elsewhere, timeouts (``truncated``) included: the reward of the state the agent committed to, scored once.
    Under a VLM reward that does not end episodes (``terminate_on_success=False``) with an environment that ends
    them on a commitment (household ``max_attempts``: the first drop), a false positive on a frame the agent
    passes through, or where a timeout stops it, earns nothing. The goals rewarded on other frames are cleared too
    (``info["vlm_reward"]``, ``info["vlm_success_all"]`` and ``info["vlm_rewards_all"]`` where present); the
    probabilities (``info["vlm_prob"]``, ``info["vlm_probs_all"]``) are measurements and stay, so that hindsight
    onset can tell a pair that held before the terminal frame (the trainer relabels terminal frames only). Place
    it right above the VLM wrapper."""

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        end = np.asarray(terminated, bool)
        info = dict(info)
        for key in ("vlm_reward", "vlm_success_all", "vlm_rewards_all"):
            if key in info:
                v = np.asarray(info[key])
                info[key] = np.where(end.reshape((-1,) + (1,) * (v.ndim - 1)), v, np.zeros((), v.dtype))
        return obs, np.where(end, np.asarray(rewards, np.float64), 0.0), terminated, truncated, info


class EpisodeStatistics(VectorWrapper):
    """Per-episode sums of a vector env, in the manner of gymnasium's vector ``RecordEpisodeStatistics``.

    NEXT_STEP autoreset: the reset step after an episode's last step belongs to no episode. At the last step
    of an episode, ``info["episode"]`` holds (B,) float64 arrays, valid where ``info["_episode"]`` is True:
    ``"r"`` return of the trained reward, ``"l"`` length in steps, ``"vlm_r"`` sum of ``info["vlm_reward"]``
    (0 without a VLM wrapper), ``"gt_r"`` ground-truth return (``info["env_reward"]`` under a VLM wrapper, else
    the reward), ``"gt_success"`` 1.0 when ground-truth success held at any step (``info["gt_success"]``, else
    ``info["success"]``).
    """

    KEYS = ("r", "l", "vlm_r", "gt_r", "gt_success")

    def __init__(self, env: gym.vector.VectorEnv):
        VectorWrapper.__init__(self, env)
        _require_next_step(env, "EpisodeStatistics")
        self._sums = {k: np.zeros(self.num_envs) for k in self.KEYS}
        self._prev_done = np.zeros(self.num_envs, bool)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = _reset_mask(options, self.num_envs)
        for v in self._sums.values():
            v[mask] = 0.0
        self._prev_done[mask] = False
        return obs, info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        live = ~self._prev_done
        n = self.num_envs

        def field(key, default):
            if key not in info:
                return np.broadcast_to(np.asarray(default, np.float64), (n,))
            return np.where(info.get(f"_{key}", np.ones(n, bool)), np.asarray(info[key], np.float64), 0.0)

        reward = np.asarray(rewards, np.float64)
        s = self._sums
        s["r"] += np.where(live, reward, 0.0)
        s["l"] += live
        s["vlm_r"] += np.where(live, field("vlm_reward", 0.0), 0.0)
        s["gt_r"] += np.where(live, field("env_reward", reward), 0.0)  # the reward itself without a VLM wrapper
        success = field("gt_success", 0.0) if "gt_success" in info else field("success", 0.0)
        s["gt_success"] = np.maximum(s["gt_success"], np.where(live, success, 0.0))
        done = np.logical_or(terminated, truncated)
        ended = done & live
        if ended.any():
            info = dict(info, episode={k: np.where(ended, v, 0.0) for k, v in s.items()}, _episode=ended)
        for v in s.values():
            v[done] = 0.0
        self._prev_done = done
        return obs, rewards, terminated, truncated, info


class SubgoalShaping(VectorWrapper):
    """Potential-based reward shaping from the sub-goals of each sub-env's goal (Ng, Harada & Russell, ICML 1999:
    the shaped task keeps the optimal policies of the original).

    r'_t = r_t + coef * (gamma * phi(s_{t+1}) - phi(s_t)), phi(s) = 1 when a sub-goal of the episode's goal
    (``env.subgoals()``, e.g. "pick up the red key" for "put the red key next to the blue ball") holds on s,
    else 0; phi is 0 at an episode's first frame and at terminal states, so the shaping of an episode sums to
    about 0 and only moves credit earlier (a right pick is rewarded when it happens, dropping it elsewhere
    takes that back).

    Sub-goal success: ``reward_model`` given (a :class:`vlmreward.RewardModel` whose bank holds every sub-goal,
    e.g. Lift's goals with Find's as negatives), p(sub-goal | frame) > its threshold on ``render()`` of the
    sub-envs (render_mode "rgb_array"), scored in one call per step: the VLM's own signal, the ground truth is
    not used; None: the sub-envs' ground truth ``subgoal_success()``. NEXT_STEP autoreset only: a reset step
    gets no shaping. ``info``: "subgoal" (B,) bool (phi of the frame after the action), "env_reward" (the
    reward before shaping, unless a wrapper below set it). Raises ValueError for another autoreset mode, a
    coef that is not finite, gamma outside (0, 1], sub-envs without sub-goals, or sub-goals outside the
    reward model's bank.
    """

    def __init__(self, env: gym.vector.VectorEnv, coef: float, gamma: float, reward_model=None):
        VectorWrapper.__init__(self, env)
        _require_next_step(env, "SubgoalShaping")
        if not np.isfinite(coef) or not 0.0 < gamma <= 1.0:
            raise ValueError(f"coef must be finite and gamma in (0, 1], got {coef}, {gamma}")
        if not self.env.unwrapped.get_attr("subgoal_task_set")[0]:
            raise ValueError("the sub-environments declare no sub-goals (env.subgoals(): vlmreward/PickPlace-v0)")
        if reward_model is not None and env.render_mode != "rgb_array":
            raise ValueError(f"sub-goals scored by a reward model need render_mode='rgb_array', got "
                             f"{env.render_mode!r}")
        self.coef, self.gamma, self.reward_model = float(coef), float(gamma), reward_model
        self._phi = np.zeros(self.num_envs)
        self._reset_step = np.zeros(self.num_envs, bool)
        self._ids: dict[str, list[int]] = {}  # goal -> bank indices of its sub-goals

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        mask = _reset_mask(options, self.num_envs)
        self._phi[mask], self._reset_step[mask] = 0.0, False
        return obs, info

    def _subgoal_ids(self, goal: str) -> list[int]:
        if goal not in self._ids:
            self._ids[goal] = [self.reward_model.bank.index(g) for g in self.env.unwrapped.call("subgoals", goal)[0]]
        return self._ids[goal]

    @torch.inference_mode()
    def _achieved(self, live: np.ndarray) -> np.ndarray:
        out = np.zeros(self.num_envs, bool)
        if not live.any():
            return out
        if self.reward_model is None:
            return np.asarray(self.env.unwrapped.call("subgoal_success"), bool) & live
        rows = np.flatnonzero(live)
        frames = _check_frames(np.stack(self.env.render())[rows])
        p = self.reward_model(frames).probs.double().cpu().numpy()  # (n, G): every sub-goal, one call
        goals = self.env.unwrapped.get_attr("goal")
        for k, i in enumerate(rows):
            out[i] = bool((p[k, self._subgoal_ids(goals[i])] > self.reward_model.threshold).any())
        return out

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        live = ~self._reset_step
        phi = self._achieved(live).astype(np.float64)
        target = np.where(terminated, 0.0, phi)  # a terminal state's potential is 0
        shaping = np.where(live, self.coef * (self.gamma * target - self._phi), 0.0)
        rewards = np.asarray(rewards, np.float64)
        ones = np.ones(self.num_envs, bool)
        info = dict(info, subgoal=phi.astype(bool), _subgoal=ones)
        if "env_reward" not in info:
            info["env_reward"], info["_env_reward"] = rewards.copy(), ones
        self._phi = phi
        self._reset_step = np.logical_or(terminated, truncated)
        return obs, rewards + shaping, terminated, truncated, info
