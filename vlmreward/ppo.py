"""Reference PPO trainer: a language-conditioned agent trained on VLM rewards alone (`vlmreward train`).

CleanRL style (Huang et al., "CleanRL", JMLR 2022; ``ppo.py``): every hyper-parameter in the ``Args`` dataclass,
the loop visible top to bottom: rollout -> GAE -> clipped-objective epochs. The reward is the binary VLM
reward of Baumli et al. (arXiv 2312.09187, eqs. 1-2), computed in one batched call per step by
``VectorVLMRewardWrapper``; episodes end on VLM success or timeout; the ground truth is logged, never trained on
(``--reward gt`` trains on it instead, the upper bound). Runs single-process or under ``torchrun`` with
DistributedDataParallel (gloo on CPU, NCCL on GPU), each rank with its own environments and reward model.

Autoreset is gymnasium's NEXT_STEP: the step after a terminal step is a reset step whose transition is masked
out of the loss; the terminal observation it carries bootstraps truncated episodes.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import random
import time
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from vlmreward.agent import Agent


def _f(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass
class Args:
    # --- run ---
    env_id: str = _f("vlmreward/Find-v0", "gymnasium id (vlmreward/* ids carry language goals)")
    reward: str = _f("vlm", "'vlm': train on the VLM reward only; 'gt': train on the environment's own reward")
    seed: int = _f(1, "seed of torch, numpy and the environments (rank r uses seed + r)")
    total_timesteps: int = _f(40_000, "environment steps over all environments and ranks")
    run_dir: str | None = _f(None, "output folder (default runs/<env>__<reward>__s<seed>)")
    resume: str | None = _f(None, "checkpoint file or run folder to continue from")
    device: str = _f("auto", "'auto' (cuda when available), 'cpu' or 'cuda[:i]'")
    threads: int = _f(1, "torch CPU threads per process")
    torch_deterministic: bool = _f(True, "deterministic cuDNN (CPU runs with a fixed seed repeat exactly)")
    progress: bool = _f(True, "show a progress bar")
    # --- reward model (Baumli et al. eqs. 1-2) ---
    model: str = _f("default", "reward model: 'default', an open_clip name, hf-hub: id or local checkpoint")
    pretrained: str | None = _f(None, "open_clip pretrained tag")
    threshold: float = _f(0.5, "beta of the binary reward: 1[p(goal | frame) > beta]")
    num_negatives: int | None = _f(None, "negatives per goal, sampled from the task set (None: all others)")
    templates: list[str] | None = _f(None, "prompt templates around each goal, e.g. 'a photo of {}'")
    terminate_on_success: bool | None = _f(None, "end episodes on reward 1 (None: yes, except the "
                                                     "per-step classic-control domains)")
    # --- environments ---
    num_envs: int = _f(16, "parallel environments per rank")
    vectorization_mode: str = _f("sync", "'sync' or 'async' vector environments")
    train_goals: list[str] | None = _f(None, "training goals (a subset of the task set; default: the env's)")
    max_episode_steps: int | None = _f(None, "episode timeout (default: the environment's)")
    frame_size: int | None = _f(None, "side of the household domains' RGB frames (default: the reward model's "
                                      "input size: no resize in the reward)")
    # --- agent ---
    image_size: int = _f(56, "side of the frames the policy sees (downsampled)")
    patch: int = _f(8, "patch size of the policy's first convolution (one grid cell of the 7x7 rooms)")
    channels: int = _f(64, "convolution channels of the pixel policy")
    hidden: int = _f(256, "hidden units of the pixel policy")
    goal_heads: int = _f(0, "goal-attention queries of the pixel policy: match maps of the goal against every "
                            "cell's content (0: FiLM only)")
    # --- PPO (CleanRL defaults) ---
    learning_rate: float = _f(1e-3, "Adam learning rate")
    anneal_lr: bool = _f(True, "linearly anneal the learning rate to 0")
    num_steps: int = _f(32, "steps per environment per rollout")
    gamma: float = _f(0.99, "discount")
    gae_lambda: float = _f(0.95, "lambda of generalised advantage estimation")
    num_minibatches: int = _f(4, "minibatches per epoch")
    update_epochs: int = _f(4, "epochs per rollout")
    norm_adv: bool = _f(True, "normalise advantages per minibatch")
    clip_coef: float = _f(0.2, "PPO clip coefficient")
    clip_vloss: bool = _f(True, "clipped value loss")
    ent_coef: float = _f(0.01, "entropy bonus coefficient")
    vf_coef: float = _f(0.5, "value loss coefficient")
    max_grad_norm: float = _f(0.5, "global gradient-norm clip")
    target_kl: float | None = _f(None, "stop the epochs early above this approximate KL")
    # --- hindsight relabelling (beyond the paper) ---
    hindsight_coef: float = _f(0.0, "weight of goal-relabelled behaviour cloning: the actions of the last "
                                     "hindsight_window steps before a frame where a TRAINING goal is rewarded "
                                     "(by the trained reward: VLM or ground truth) are imitated for that goal "
                                     "(0: off)")
    hindsight_window: int = _f(4, "steps before an achieved goal whose actions are relabelled with it")
    hindsight_decay: float = _f(0.7, "weight decay per step back from the achieved goal")
    # --- evaluation, logging, checkpoints ---
    eval_interval: int = _f(10, "evaluate every this many iterations (0: only at the end)")
    eval_episodes: int = _f(24, "evaluation episodes on training goals and on held-out goals each")
    checkpoint_interval: int = _f(5, "checkpoint every this many iterations (and at the end)")


REWARDS = ("vlm", "gt")
CHECKPOINT = "checkpoint.pt"
FIRE_CHECK_ROLLOUTS = 5  # train() warns when the VLM reward has not fired in this many first rollouts


# ----------------------------------------------------------------------------------------------------------
# command line: flags generated from Args, optional YAML config (flags > config > defaults)
# ----------------------------------------------------------------------------------------------------------
def _field_type(f: dataclasses.Field):
    t = typing.get_type_hints(Args)[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        t = args[0]
    return t


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config`` and one ``--flag`` per ``Args`` field; unset flags stay absent from the namespace."""
    parser.add_argument("--config", default=None, help="YAML file of Args fields (flags override it)")
    for f in dataclasses.fields(Args):
        t, flag = _field_type(f), "--" + f.name.replace("_", "-")
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
        if t is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif typing.get_origin(t) is list:
            parser.add_argument(flag, nargs="+", type=str, **kw)
        else:
            parser.add_argument(flag, type=t, **kw)


def _coerce(name: str, value):
    f = {f.name: f for f in dataclasses.fields(Args)}[name]
    t = _field_type(f)
    if value is None:
        return None
    if typing.get_origin(t) is list:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise TypeError(f"config key {name!r} must be a list of strings, got {value!r}")
        return [str(v) for v in value]
    if t is bool and not isinstance(value, bool):
        raise TypeError(f"config key {name!r} must be true or false, got {value!r}")
    if t in (int, float) and isinstance(value, str):  # PyYAML reads 1e5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            raise TypeError(f"config key {name!r} must be {t.__name__}, got {value!r}") from None
    if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if t is int and isinstance(value, float) and value.is_integer():  # YAML 1e5 reads as a float
        return int(value)
    if not isinstance(value, t):
        raise TypeError(f"config key {name!r} must be {t.__name__}, got {value!r}")
    return value


def load_config(path) -> dict:
    """Reads a YAML mapping of ``Args`` fields (dashes or underscores). Raises FileNotFoundError, ValueError."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config {path} must be a YAML mapping of Args fields, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(Args)}
    out = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in names:
            import difflib
            close = difflib.get_close_matches(name, names, n=3)
            raise ValueError(f"unknown key {key!r} in config {path}" + (f"; did you mean {close}?" if close else ""))
        out[name] = _coerce(name, value)
    return out


def parse_args(namespace: argparse.Namespace) -> Args:
    """Args from the defaults, then the ``--config`` YAML, then the flags given on the command line."""
    values = load_config(namespace.config) if getattr(namespace, "config", None) else {}
    names = {f.name for f in dataclasses.fields(Args)}
    values.update({k: v for k, v in vars(namespace).items() if k in names})
    return check_args(Args(**values))


def check_args(args: Args) -> Args:
    """Validates field values; raises ValueError naming the bad field."""
    if args.reward not in REWARDS:
        raise ValueError(f"reward must be one of {REWARDS}, got {args.reward!r}")
    if args.vectorization_mode not in ("sync", "async"):
        raise ValueError(f"vectorization_mode must be 'sync' or 'async', got {args.vectorization_mode!r}")
    for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "image_size",
                 "patch", "channels", "hidden", "hindsight_window"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(args, name)}")
    if (args.num_envs * args.num_steps) % args.num_minibatches:
        raise ValueError(f"num_envs * num_steps ({args.num_envs * args.num_steps}) must be divisible by "
                         f"num_minibatches ({args.num_minibatches})")
    if not 0.0 <= args.threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {args.threshold}")
    if args.hindsight_coef < 0 or not 0.0 < args.hindsight_decay <= 1.0:
        raise ValueError(f"hindsight_coef must be >= 0 and hindsight_decay in (0, 1], got {args.hindsight_coef}, "
                         f"{args.hindsight_decay}")
    return args


# ----------------------------------------------------------------------------------------------------------
# environments and reward
# ----------------------------------------------------------------------------------------------------------
def check_env_id(env_id: str) -> None:
    import difflib

    import vlmreward  # noqa: F401  (registers the vlmreward/* ids)

    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        raise ValueError(f"unknown environment id {env_id!r}" + (f"; did you mean {close}?" if close else
                                                                  "; see gymnasium.registry for the ids"))


class Task:
    """What the trainer needs to know about the environment: goals, reward model, how to build envs."""

    def __init__(self, args: Args, device: torch.device):
        check_env_id(args.env_id)
        probe = gym.make(args.env_id)
        base = probe.unwrapped
        self.language = hasattr(base, "task_set")
        self.observation_shape = probe.observation_space.shape
        if not isinstance(probe.action_space, gym.spaces.Discrete):
            raise ValueError(f"{args.env_id}: the trainer needs a Discrete action space, got {probe.action_space}")
        self.num_actions = int(probe.action_space.n)
        self.args = args
        self.reward_model = None
        if not self.language:  # a plain gymnasium env: one implicit goal, ground-truth reward only
            if args.reward == "vlm":
                raise ValueError(f"{args.env_id} has no language goals (no task_set): use --reward gt or a "
                                 "vlmreward/* environment")
            if args.train_goals:
                raise ValueError(f"{args.env_id} has no language goals; --train-goals does not apply")
            self.task_set, self.train_goals, self.heldout_goals = ("",), ("",), ()
            self.goal_embeddings = torch.zeros(1, 0)
            self.terminate_on_success = False
            self.env_kwargs = _env_kwargs(args, None)
            probe.close()
            return
        self.task_set = tuple(base.task_set)
        self.train_goals = tuple(args.train_goals) if args.train_goals else tuple(base.train_goals)
        for g in self.train_goals:
            if g not in self.task_set:
                import difflib
                close = difflib.get_close_matches(g, self.task_set, n=3)
                raise ValueError(f"goal {g!r} is not in the task set of {args.env_id}"
                                 + (f"; did you mean {close}?" if close else ""))
        self.heldout_goals = tuple(g for g in base.heldout_goals if g not in self.train_goals)
        # Goal-reaching domains end on success (the paper); the classic-control domains of the VLM-RM peer
        # reward every step spent in the goal state instead.
        from vlmreward.envs import CartPoleUpright, MountainCarFlag
        per_step = isinstance(base, (CartPoleUpright, MountainCarFlag))
        self.terminate_on_success = (not per_step if args.terminate_on_success is None
                                     else args.terminate_on_success)
        probe.close()
        from vlmreward.goals import GoalBank
        from vlmreward.models import load_model

        model = load_model(args.model, args.pretrained, device=str(device))
        frame_size = args.frame_size
        if frame_size is None and hasattr(base, "frame_size"):
            frame_size = int(model.preprocess_cfg["image_size"])
        self.env_kwargs = _env_kwargs(args, frame_size)
        kw = {"templates": tuple(args.templates)} if args.templates else {}
        self.bank = GoalBank(model, list(self.task_set), negatives=list(self.task_set),
                             num_negatives=args.num_negatives, seed=args.seed, **kw)
        self.goal_embeddings = self.bank.goal_embeddings.float().cpu()
        if args.reward == "vlm":
            from vlmreward.reward import RewardModel
            self.reward_model = RewardModel(model, self.bank, threshold=args.threshold)

    def goal_id(self, goal: str) -> int:
        return self.bank.index(goal) if self.language else 0


class NoSuccessTermination(gym.Wrapper):
    """Drops the environment's own termination on ground-truth success (household envs end episodes there),
    so that in 'vlm' mode episodes end on VLM success or timeout only (the paper): ground truth never leaks
    into training through termination."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated and not info.get("success", False), truncated, info


def _env_kwargs(args: Args, frame_size: int | None) -> dict:
    kwargs = {}
    if args.max_episode_steps is not None:
        kwargs["max_episode_steps"] = args.max_episode_steps
    if frame_size is not None:
        kwargs["frame_size"] = frame_size
    return kwargs


def make_envs(task: Task, num_envs: int, goals, *, mode: str = "sync"):
    """A vector env (NEXT_STEP autoreset) over ``task``; in 'vlm' mode wrapped by VectorVLMRewardWrapper."""
    args = task.args
    wrappers = [NoSuccessTermination] if task.reward_model is not None and task.terminate_on_success else None
    kwargs = dict(task.env_kwargs)
    if task.language:
        kwargs["render_mode"] = "rgb_array"
        kwargs["goal_pool"] = tuple(goals)
    vector_kwargs = {"shared_memory": False} if mode == "async" else {}
    envs = gym.make_vec(args.env_id, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs,
                        wrappers=wrappers, **kwargs)
    if task.reward_model is not None:
        from vlmreward.wrappers import VectorVLMRewardWrapper
        envs = VectorVLMRewardWrapper(envs, task.reward_model, terminate_on_success=task.terminate_on_success,
                                      keep_env_reward=True, score_all_goals=args.hindsight_coef > 0)
    return envs


def _split_obs(task: Task, obs, infos, num_envs: int):
    """(raw observation batch, goal ids (B,) int64) from a vector env's observation and info."""
    if isinstance(obs, dict):
        return obs["observation"], torch.as_tensor(np.asarray(obs["goal_id"]), dtype=torch.int64)
    if task.language:
        return obs, torch.tensor([task.goal_id(g) for g in infos["goal"]], dtype=torch.int64)
    return obs, torch.zeros(num_envs, dtype=torch.int64)


def achieved_goals(task: Task, envs, infos, goal_ids: list[int], num_envs: int) -> np.ndarray:
    """bool (B, len(goal_ids)): which of ``goal_ids`` the trained reward rewards on the frame after the action.

    VLM mode: the binary VLM reward of every goal (``info["vlm_rewards_all"]``, one model call); ground-truth
    mode: the environments' own ``goal_success``. Only these are used for relabelling, so each mode learns
    from its own reward and nothing else.
    """
    if task.reward_model is not None:
        return np.asarray(infos["vlm_rewards_all"])[:, goal_ids] > 0
    goals = [task.bank.goals[g] for g in goal_ids]
    return np.stack([np.asarray(envs.call("goal_success", g), dtype=bool) for g in goals], axis=1)


def hindsight_samples(achieved: torch.Tensor, valid: torch.Tensor, ended: torch.Tensor, goal_ids: torch.Tensor,
                      window: int, decay: float):
    """Goal relabelling (Andrychowicz et al., arXiv 1707.01495; as supervised learning: Ghosh et al., GCSL,
    arXiv 1912.06088): every step s of an episode whose next ``window`` steps reach a frame where training goal
    g is rewarded becomes an example of acting for g.

    achieved bool (T,B,G'); valid, ended float (T,B) (rollout buffers: step t valid = not a reset step, ended =
    the episode ended at t); goal_ids int64 (G',) the bank ids of the G' columns. Returns (t, b, goal, weight)
    1-d tensors: buffer indices, the relabelled goal's bank id and ``decay ** (steps to the goal)``; for each
    (s, b, g) only the nearest achievement counts.
    """
    T = achieved.shape[0]
    best = torch.full(achieved.shape, -1.0)  # weight of the nearest later achievement within the window
    live = valid.bool()  # not a reset step
    ach = achieved.bool() & live[..., None]
    alive = live.clone()  # step s valid and no episode end at s, ..., s + k - 1
    for k in range(min(window, T)):
        if k:
            alive = alive[:T - k] & (ended[k - 1:T - 1] == 0)
        hit = ach[k:] & alive[..., None]  # achievement at step s + k
        w = torch.where(hit, torch.tensor(decay ** k), torch.tensor(-1.0))
        best[:T - k] = torch.maximum(best[:T - k], w)
    t, b, g = torch.nonzero(best > 0, as_tuple=True)
    return t, b, goal_ids[g], best[t, b, g]


def _info(infos, key, num_envs, default=0.0):
    if key in infos:
        return np.asarray(infos[key], dtype=np.float64)
    return np.full(num_envs, default, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# evaluation: ground-truth success on training and held-out goals
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(agent: Agent, task: Task, goals, episodes: int, *, seed: int, deterministic: bool = False) -> dict:
    """Runs ``episodes`` episodes (goals cycled) in ONE env with the training wrapper; returns the mean
    ground-truth success (any step of the episode), ground-truth return and VLM return."""
    if not goals or episodes < 1:
        return {"success": float("nan"), "gt_return": float("nan"), "vlm_return": float("nan"), "episodes": 0}
    envs = make_envs(task, 1, goals)
    rng = np.random.default_rng(seed)
    successes, gt_returns, vlm_returns = [], [], []
    try:
        for e in range(episodes):
            goal = goals[e % len(goals)]
            options = {"goal": goal} if task.language else None
            obs, infos = envs.reset(seed=int(rng.integers(2 ** 31)), options=options)
            success, gt_ret, vlm_ret = False, 0.0, 0.0
            while True:
                x, goal_ids = _split_obs(task, obs, infos, 1)
                action, _, _, _ = agent.get_action_and_value(agent.prepare(x), goal_ids, deterministic=deterministic)
                obs, reward, term, trunc, infos = envs.step(action.cpu().numpy())
                gt_ret += float(_info(infos, "env_reward", 1, reward[0])[0])
                vlm_ret += float(_info(infos, "vlm_reward", 1, 0.0)[0])
                success |= bool(_info(infos, "gt_success", 1, _info(infos, "success", 1)[0])[0])
                if term[0] or trunc[0]:
                    break
            successes.append(success)
            gt_returns.append(gt_ret)
            vlm_returns.append(vlm_ret)
    finally:
        envs.close()
    return {"success": float(np.mean(successes)), "gt_return": float(np.mean(gt_returns)),
            "vlm_return": float(np.mean(vlm_returns)), "episodes": episodes}


# ----------------------------------------------------------------------------------------------------------
# logging
# ----------------------------------------------------------------------------------------------------------
class Logger:
    """TensorBoard + a long-format CSV (step, tag, value), rank 0 only. Resuming from a checkpoint taken at
    ``resume_step`` drops what a killed run logged after it (and a torn last line), so nothing is counted twice."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1)
        self.csv_path = run_dir / "metrics.csv"
        rows = []
        if resume_step is not None and self.csv_path.exists():
            rows = [r for r in _read_rows(self.csv_path) if r[0] <= resume_step]
        elif self.csv_path.exists():
            self.csv_path.unlink()  # a fresh run in an old folder starts a fresh log
        self.file = open(self.csv_path, "w", newline="")
        self.csv = csv.writer(self.file)
        self.csv.writerow(["step", "tag", "value"])
        self.csv.writerows(rows)

    def log(self, tag: str, value: float, step: int) -> None:
        if self.enabled:
            self.writer.add_scalar(tag, value, step)
            self.csv.writerow([step, tag, f"{float(value):.6g}"])

    def flush(self) -> None:
        if self.enabled:
            self.file.flush()
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.file.close()


def _read_rows(csv_path) -> list[tuple[int, str, float]]:
    rows = []
    with open(csv_path, newline="") as fh:
        for row in csv.reader(fh):
            try:
                rows.append((int(row[0]), row[1], float(row[2])))
            except (ValueError, IndexError):  # the header, or a line torn by a kill
                continue
    return rows


def read_metrics(csv_path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metrics.csv -> {tag: (steps, values)} in logging order."""
    series: dict[str, tuple[list, list]] = {}
    for step, tag, value in _read_rows(csv_path):
        s, v = series.setdefault(tag, ([], []))
        s.append(step)
        v.append(value)
    return {t: (np.array(s), np.array(v)) for t, (s, v) in series.items()}


def plot_learning_curves(csv_path, png_path, title: str) -> Path:
    """Learning-curve PNG: ground-truth success (training episodes and evaluations) and episodic returns."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(csv_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))

    def smooth(y):  # moving average over ~1/40 of the run's episodes
        k = max(10, len(y) // 40)
        return np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y

    ax = axes[0]
    if "charts/gt_success" in m:
        s, v = m["charts/gt_success"]
        ax.plot(s[len(s) - len(smooth(v)):], smooth(v), label="training episodes (smoothed)", alpha=0.7)
    for tag, label in (("eval/train_success", "eval: training goals"), ("eval/heldout_success", "eval: held-out goals")):
        if tag in m:
            ax.plot(*m[tag], marker="o", label=label)
    ax.set(xlabel="environment steps", ylabel="ground-truth success", ylim=(-0.02, 1.02), title="success")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    for tag, label in (("charts/episodic_return", "trained reward"), ("charts/vlm_return", "VLM reward"),
                       ("charts/gt_return", "ground-truth reward")):
        if tag in m:
            s, v = m[tag]
            ax.plot(s[len(s) - len(smooth(v)):], smooth(v), label=label)
    ax.set(xlabel="environment steps", ylabel="episode return (smoothed)", title="returns")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


# ----------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic write: a crash leaves either the old or the new checkpoint, never a torn file."""
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    """Loads a trainer checkpoint (file, or a run folder holding ``checkpoint.pt``). Raises FileNotFoundError."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(state, dict) or "agent" not in state or "args" not in state:
        raise ValueError(f"{path} is not a vlmreward train checkpoint")
    return state


# ----------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------
def compute_advantages(rewards, values, terminated, ended, next_value, args: Args) -> torch.Tensor:
    """Generalised advantage estimation (Schulman et al., arXiv 1506.02438, eq. 16) over a (T,B) rollout.

    ``terminated``/``ended`` (T,B) float: the transition ended the episode by termination / by either
    termination or truncation. Under NEXT_STEP autoreset ``values[t+1]`` after a terminal step is the value of
    the terminal observation, which bootstraps a truncated episode; a termination bootstraps nothing and no
    advantage flows across an episode end. ``next_value`` (B,): value of the observation after the rollout.
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = torch.zeros_like(next_value)
    for t in reversed(range(T)):
        nextvalues = next_value if t == T - 1 else values[t + 1]
        delta = rewards[t] + args.gamma * nextvalues * (1.0 - terminated[t]) - values[t]
        lastgaelam = delta + args.gamma * args.gae_lambda * (1.0 - ended[t]) * lastgaelam
        advantages[t] = lastgaelam
    return advantages


def _setup_distributed(args: Args):
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, rank, device


def train(args: Args) -> dict:
    """Trains PPO per ``args``; returns the final evaluation, paths and throughput. See the module doc."""
    args = check_args(dataclasses.replace(args))
    start_iteration, state = 1, None
    if args.resume:
        state = load_checkpoint(args.resume)
        saved = Args(**state["args"])
        # the run continues with its own settings; only the budget and presentation may change
        args = dataclasses.replace(saved, total_timesteps=args.total_timesteps, progress=args.progress,
                                   resume=args.resume, run_dir=str(Path(args.resume if Path(args.resume).is_dir()
                                                                        else Path(args.resume).parent)))
        start_iteration = state["iteration"] + 1
    world, rank, device = _setup_distributed(args)
    # one thread: on a shared 2-core machine a second spinning OpenMP thread makes small ops ~100x slower
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    run_dir = Path(args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.reward}__s{args.seed}")
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "args.json").write_text(json.dumps(dataclasses.asdict(args), indent=2))

    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    task = Task(args, device)
    agent = Agent(task.observation_shape, task.num_actions, task.goal_embeddings,
                  train_goal_ids=[task.goal_id(g) for g in task.train_goals], image_size=args.image_size,
                  patch=args.patch, channels=args.channels, hidden=args.hidden,
                  goal_heads=args.goal_heads).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    if state is not None:
        agent.load_state_dict(state["agent"])
        optimizer.load_state_dict(state["optimizer"])
    learner = nn.parallel.DistributedDataParallel(agent) if world > 1 else agent

    B, T = args.num_envs, args.num_steps
    batch_size = B * T
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // (batch_size * world))
    goal_ids_of = {g: task.goal_id(g) for g in task.train_goals}
    logger = Logger(run_dir, rank == 0, resume_step=state["global_step"] if state else None)

    envs = make_envs(task, B, task.train_goals, mode=args.vectorization_mode)
    env_seed = args.seed + 10_000 * rank + 1_000_003 * (start_iteration - 1)  # new episodes after a resume
    obs, infos = envs.reset(seed=[env_seed + i for i in range(B)])
    raw, goal_ids = _split_obs(task, obs, infos, B)
    next_x = agent.prepare(raw)
    next_goal = goal_ids.to(device)
    next_done = torch.zeros(B, dtype=torch.bool, device=device)  # previous transition ended: a reset step next

    x_buf = torch.zeros((T, B) + next_x.shape[1:], dtype=next_x.dtype, device=device)
    goal_buf = torch.zeros((T, B), dtype=torch.int64, device=device)
    actions = torch.zeros((T, B), dtype=torch.int64, device=device)
    logprobs = torch.zeros((T, B), device=device)
    rewards = torch.zeros((T, B), device=device)
    terminated = torch.zeros((T, B), device=device)
    ended = torch.zeros((T, B), device=device)
    valid = torch.zeros((T, B), device=device)
    values = torch.zeros((T, B), device=device)
    hindsight_ids = [task.goal_id(g) for g in task.train_goals] if args.hindsight_coef > 0 and task.language else []
    achieved = torch.zeros((T, B, len(hindsight_ids)), dtype=torch.bool)

    ep = {k: np.zeros(B) for k in ("return", "vlm_return", "gt_return", "length", "success")}
    recent: dict[str, list[float]] = {"gt_success": [], "return": []}
    global_step = state["global_step"] if state else 0
    t0, steps0 = time.time(), global_step
    # a beta above every p(goal | frame) trains on a reward of 0: warn early (FIRE_CHECK_ROLLOUTS)
    vlm_fired, vlm_prob_max = 0.0, 0.0
    bar = None
    if args.progress and rank == 0:
        from tqdm import tqdm
        bar = tqdm(total=num_iterations * batch_size * world, initial=min(global_step, num_iterations * batch_size * world),
                   unit="step", dynamic_ncols=True, desc=args.env_id)
    last_eval: dict = {}

    def run_eval(iteration: int) -> dict:
        out = {}
        for split, goals in (("train", task.train_goals), ("heldout", task.heldout_goals)):
            r = evaluate(agent, task, list(goals), args.eval_episodes, seed=args.seed + 7919 * iteration)
            out[split] = r
            if r["episodes"]:
                logger.log(f"eval/{split}_success", r["success"], global_step)
                logger.log(f"eval/{split}_gt_return", r["gt_return"], global_step)
                logger.log(f"eval/{split}_vlm_return", r["vlm_return"], global_step)
        return out

    for iteration in range(start_iteration, num_iterations + 1):
        # reseeding per iteration makes a resumed learner draw the same samples as an uninterrupted one
        torch.manual_seed(args.seed * 100_003 + rank * 1_009 + iteration)
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)

        # ---- rollout ----
        for step in range(T):
            global_step += B * world
            x_buf[step], goal_buf[step] = next_x, next_goal
            valid[step] = (~next_done).float()
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_x, next_goal)
            values[step], actions[step], logprobs[step] = value, action, logprob
            obs, reward, term, trunc, infos = envs.step(action.cpu().numpy())
            done = np.logical_or(term, trunc)
            prev_done = next_done.cpu().numpy()
            rewards[step] = torch.as_tensor(np.asarray(reward), dtype=torch.float32, device=device)
            if hindsight_ids:
                achieved[step] = torch.from_numpy(achieved_goals(task, envs, infos, hindsight_ids, B))
            terminated[step] = torch.as_tensor(term, dtype=torch.float32, device=device)
            ended[step] = torch.as_tensor(done, dtype=torch.float32, device=device)
            raw, goal_ids = _split_obs(task, obs, infos, B)
            next_x, next_goal = agent.prepare(raw), goal_ids.to(device)
            next_done = torch.as_tensor(done, device=device)

            # episode statistics (reset steps of NEXT_STEP autoreset are not part of any episode)
            live = ~prev_done
            ep["return"] += np.where(live, reward, 0.0)
            vlm_reward = np.where(live, _info(infos, "vlm_reward", B), 0.0)
            ep["vlm_return"] += vlm_reward
            if task.reward_model is not None and iteration < start_iteration + FIRE_CHECK_ROLLOUTS:
                vlm_fired += float(vlm_reward.sum())
                vlm_prob_max = max(vlm_prob_max, float(np.max(np.where(live, _info(infos, "vlm_prob", B), 0.0))))
            ep["gt_return"] += np.where(live, _info(infos, "env_reward", B, 0.0) if task.reward_model else reward, 0.0)
            ep["length"] += live
            gt = _info(infos, "gt_success", B, 0.0) if "gt_success" in infos else _info(infos, "success", B, 0.0)
            ep["success"] = np.maximum(ep["success"], np.where(live, gt, 0.0))
            for i in np.flatnonzero(done & live):
                logger.log("charts/episodic_return", ep["return"][i], global_step)
                logger.log("charts/episodic_length", ep["length"][i], global_step)
                logger.log("charts/gt_return", ep["gt_return"][i], global_step)
                logger.log("charts/gt_success", ep["success"][i], global_step)
                if task.reward_model is not None:
                    logger.log("charts/vlm_return", ep["vlm_return"][i], global_step)
                recent["gt_success"].append(ep["success"][i])
                recent["return"].append(ep["return"][i])
            for k in ep:
                ep[k][done] = 0.0

        last_checked = iteration == start_iteration + FIRE_CHECK_ROLLOUTS - 1
        if task.reward_model is not None and last_checked and vlm_fired == 0 and rank == 0:
            warnings.warn(f"the VLM reward has not fired in {FIRE_CHECK_ROLLOUTS * batch_size} steps: the largest "
                          f"p(goal | frame) seen was {vlm_prob_max:.3f}, below threshold beta = {args.threshold}; "
                          "the agent is training on a reward of 0. Choose beta from the model's precision-recall curve "
                          "(`vlmreward evaluate` prints the best-F1 beta).", RuntimeWarning, stacklevel=2)

        # ---- generalised advantage estimation ----
        with torch.no_grad():
            advantages = compute_advantages(rewards, values, terminated, ended,
                                            agent.get_value(next_x, next_goal), args)
            returns = advantages + values

        # ---- clipped-objective epochs (Schulman et al., arXiv 1707.06347) ----
        b_x = x_buf.reshape((-1,) + x_buf.shape[2:])
        b_goal, b_actions, b_logprobs = goal_buf.reshape(-1), actions.reshape(-1), logprobs.reshape(-1)
        b_adv, b_returns, b_values, b_valid = (advantages.reshape(-1), returns.reshape(-1), values.reshape(-1),
                                                 valid.reshape(-1))
        clipfracs, approx_kl, old_approx_kl = [], torch.zeros(()), torch.zeros(())
        hs, n_hs = None, 0
        if hindsight_ids:  # relabelled (step, env, goal, weight) examples of this rollout
            hs = hindsight_samples(achieved, valid.cpu(), ended.cpu(), torch.tensor(hindsight_ids),
                                   args.hindsight_window, args.hindsight_decay)
            n_hs = len(hs[0])
            logger.log("hindsight/examples", float(n_hs), global_step)
        hs_loss = torch.zeros(())
        pg_loss = v_loss = entropy_loss = torch.zeros(())
        for epoch in range(args.update_epochs):
            order = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                mb = order[start:start + minibatch_size]
                m = b_valid[mb]
                n = m.sum().clamp_min(1.0)

                def mmean(v):
                    return (v * m).sum() / n

                x_mb, g_mb, a_mb = b_x[mb], b_goal[mb], b_actions[mb]
                if n_hs:  # goal-relabelled examples ride in the same forward (one DDP call)
                    pick = torch.randint(n_hs, (min(n_hs, minibatch_size),))
                    ht, hb, hg, hw = (v[pick].to(device) for v in hs)
                    x_mb, g_mb = torch.cat([x_mb, x_buf[ht, hb]]), torch.cat([g_mb, hg])
                    a_mb = torch.cat([a_mb, actions[ht, hb]])
                _, newlogprob, entropy, newvalue = learner(x_mb, g_mb, a_mb)
                if n_hs:
                    hs_loss = -(hw * newlogprob[len(mb):]).sum() / hw.sum()
                    newlogprob, entropy, newvalue = newlogprob[:len(mb)], entropy[:len(mb)], newvalue[:len(mb)]
                logratio = newlogprob - b_logprobs[mb]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = mmean(-logratio)
                    approx_kl = mmean((ratio - 1) - logratio)
                    clipfracs.append(mmean(((ratio - 1.0).abs() > args.clip_coef).float()).item())
                mb_adv = b_adv[mb]
                if args.norm_adv:
                    mean = mmean(mb_adv)
                    std = (mmean((mb_adv - mean) ** 2) * n / (n - 1).clamp_min(1.0)).sqrt()
                    mb_adv = (mb_adv - mean) / (std + 1e-8)
                pg_loss = mmean(torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)))
                if args.clip_vloss:
                    v_unclipped = (newvalue - b_returns[mb]) ** 2
                    v_clipped = b_values[mb] + (newvalue - b_values[mb]).clamp(-args.clip_coef, args.clip_coef)
                    v_loss = 0.5 * mmean(torch.max(v_unclipped, (v_clipped - b_returns[mb]) ** 2))
                else:
                    v_loss = 0.5 * mmean((newvalue - b_returns[mb]) ** 2)
                entropy_loss = mmean(entropy)
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                if n_hs:  # goal-relabelled behaviour cloning
                    loss = loss + args.hindsight_coef * hs_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None:
                kl = approx_kl.detach().clone()
                if world > 1:
                    dist.all_reduce(kl)
                    kl /= world
                if kl > args.target_kl:
                    break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        sps = (global_step - steps0) / max(time.time() - t0, 1e-9)
        logger.log("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        logger.log("losses/value_loss", v_loss.item(), global_step)
        logger.log("losses/policy_loss", pg_loss.item(), global_step)
        logger.log("losses/entropy", entropy_loss.item(), global_step)
        logger.log("losses/old_approx_kl", old_approx_kl.item(), global_step)
        logger.log("losses/approx_kl", approx_kl.item(), global_step)
        logger.log("losses/clipfrac", float(np.mean(clipfracs)), global_step)
        logger.log("losses/explained_variance", explained_var, global_step)
        if n_hs:
            logger.log("losses/hindsight_bc", hs_loss.item(), global_step)
        logger.log("perf/steps_per_second", sps, global_step)

        last = iteration == num_iterations
        if rank == 0 and ((args.eval_interval and iteration % args.eval_interval == 0) or last):
            last_eval = run_eval(iteration)
        if rank == 0 and (iteration % args.checkpoint_interval == 0 or last):
            save_checkpoint(run_dir / CHECKPOINT, {
                "agent": agent.state_dict(), "optimizer": optimizer.state_dict(), "iteration": iteration,
                "global_step": global_step, "args": dataclasses.asdict(args), "goals": list(task.task_set),
                "train_goals": list(task.train_goals), "heldout_goals": list(task.heldout_goals),
                "env_kwargs": task.env_kwargs,
                "observation_shape": tuple(task.observation_shape), "num_actions": task.num_actions})
        logger.flush()
        if bar is not None:
            bar.update(batch_size * world)
            recent = {k: v[-100:] for k, v in recent.items()}
            post = {"sps": f"{sps:.0f}"}
            if recent["gt_success"]:
                post["gt_success"] = f"{np.mean(recent['gt_success']):.2f}"
                post["return"] = f"{np.mean(recent['return']):.2f}"
            bar.set_postfix(post)

    envs.close()
    if bar is not None:
        bar.close()
    result = {"run_dir": str(run_dir), "global_step": global_step, "start_iteration": start_iteration,
              "iterations": num_iterations, "steps_per_second": None, "eval": last_eval}
    if rank == 0:
        result["steps_per_second"] = (global_step - steps0) / max(time.time() - t0, 1e-9)
        logger.close()
        title = f"{args.env_id}, PPO on {'VLM' if args.reward == 'vlm' else 'ground-truth'} reward, seed {args.seed}"
        result["png"] = str(plot_learning_curves(run_dir / "metrics.csv", run_dir / "learning_curves.png", title))
        (run_dir / "results.json").write_text(json.dumps(result, indent=2))
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def run(namespace: argparse.Namespace) -> int:
    """`vlmreward train`: parse flags + config, train, print ground-truth success and the PNG path."""
    args = parse_args(namespace)
    result = train(args)
    if int(os.environ.get("RANK", "0")) == 0:
        for split, name in (("train", "training goals"), ("heldout", "held-out goals")):
            r = result["eval"].get(split)
            if r and r["episodes"]:
                print(f"ground-truth success on {name}: {r['success']:.1%} ({r['episodes']} episodes, "
                      f"ground-truth return {r['gt_return']:.2f})")
        print(f"steps per second: {result['steps_per_second']:.0f}")
        print(f"learning curves: {result['png']}")
        print(f"checkpoint: {Path(result['run_dir']) / CHECKPOINT}")
    return 0
