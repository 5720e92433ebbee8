"""Reference PPO trainer: a language-conditioned agent trained on VLM rewards alone (`vlmreward train`).

CleanRL's ``ppo.py`` (Huang et al., "CleanRL", JMLR 2022) in order, top to bottom: ``Args`` (every
hyper-parameter), the environments and agent, then per iteration the rollout, generalised advantage estimation
and the clipped-objective epochs. The reward is the binary VLM reward of Baumli et al. (arXiv 2312.09187,
eqs. 1-2), one batched call per step (:mod:`vlmreward.rl.task`); episodes of goal-reaching environments end
on VLM success or timeout; the ground truth is logged, never trained on (``--reward gt`` trains on it
instead: the upper bound). Hindsight relabelling (beyond the paper) imitates, for each goal the trained reward
fired on, the actions that led there. Runs single-process or under ``torchrun`` (DistributedDataParallel,
gloo on CPU, NCCL on GPU), each rank with its own environments and reward model.

Autoreset is gymnasium's NEXT_STEP: the step after a terminal step is a reset step whose transition is masked
out of the loss; the terminal observation it carries bootstraps truncated episodes.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from vlmreward import config, fileio
from vlmreward.config import option, require
from vlmreward.envs.household import VIEWS
from vlmreward.reward import MODES, SCORERS
from vlmreward.rl.agent import Agent
from vlmreward.rl.checkpoint import CHECKPOINT, checkpoint_path, load_checkpoint, save_checkpoint
from vlmreward.rl.runlog import RunLogger, log_episodes, log_update, plot_learning_curves
from vlmreward.rl.task import Task, achieved_goals, evaluate_agent, make_envs, split_observation
from vlmreward.wrappers import FRAME_SOURCES

REWARDS = ("vlm", "gt")
GOAL_ENCODINGS = ("text", "words")
REWARD_AT = ("step", "termination")
FIRE_CHECK_ROLLOUTS = 5  # train() warns when the VLM reward has not fired in this many first rollouts

@dataclass
class Args:
    # --- run ---
    env_id: str = option("vlmreward/Find-v0", "gymnasium id (vlmreward/* ids carry language goals)")
    reward: str = option("vlm", "'vlm': train on the VLM reward only; 'gt': train on the environment's own reward")
    seed: int = option(1, "seed of torch, numpy and the environments (rank r uses seed + r)")
    total_timesteps: int = option(40_000, "environment steps over all environments and ranks")
    run_dir: str | None = option(None, "output folder (default runs/<env>__<reward>__s<seed>)")
    resume: str | None = option(None, "checkpoint file or run folder to continue from")
    device: str = option("auto", "'auto' (cuda when available), 'cpu' or 'cuda[:i]'")
    threads: int = option(1, "torch CPU threads per process")
    torch_deterministic: bool = option(True, "deterministic cuDNN (CPU runs with a fixed seed repeat exactly)")
    progress: bool = option(True, "show a progress bar")
    # --- reward model (Baumli et al. eqs. 1-2) ---
    model: str = option("default", "reward model: 'default', an open_clip name, hf-hub: id or local checkpoint")
    pretrained: str | None = option(None, "open_clip pretrained tag")
    threshold: float = option(0.5, "beta: the binary reward is 1[p(goal | frame) > beta]; in every mode, "
                                   "p > beta is the VLM success that ends goal-reaching episodes")
    reward_mode: str = option("binary", "reward of a step: 'binary' (the paper), 'probability' (p), 'cosine', "
                                        "'projection' (VLM-RM's goal-baseline projection; needs --baseline)")
    scorer: str = option("auto", "how frames are scored against goals: 'embedding' (cosine of pooled embeddings), "
                                 "'relation' (the model's object-relation head), 'auto' (relation for goals "
                                 "that name two objects when the model has the head)")
    baseline: list[str] | None = option(None, "baseline prompt(s) of the 'projection' reward, e.g. 'a pole'")
    alpha: float = option(0.5, "projection strength of the 'projection' reward, in [0, 1]")
    num_negatives: int | None = option(None, "negatives per goal, sampled from the task set (None: all others)")
    negatives_from: list[str] | None = option(None, "environment ids whose task sets join every goal's negatives, "
                                                    "e.g. vlmreward/Find-v0 for Lift: Find's goals describe the "
                                                    "frames where nothing is carried")
    templates: list[str] | None = option(None, "prompt templates around each goal, e.g. 'a photo of {}'")
    reward_at: str = option("step", "'step': every frame after an action is rewarded (the paper); 'termination': "
                                    "only frames where the environment itself ends the episode, e.g. the drop "
                                    "that spends --max-attempts (timeouts earn nothing; VLM success ends none)")
    terminate_on_success: bool | None = option(None, "end episodes on reward 1 (None: as the environment "
                                                     "declares: goal-reaching yes, per-step no)")
    subgoal_coef: float = option(0.0, "potential-based shaping from the goal's sub-goals (PickPlace: carrying one "
                                      "of its objects), coef * (gamma * phi' - phi); phi from the same reward as "
                                      "the goal (VLM: the sub-goal's p > subgoal_threshold; gt: ground truth); 0: off")
    subgoal_threshold: float = option(0.5, "beta of the sub-goal reward (VLM only): p(sub-goal | frame) over the "
                                           "sub-goal task set with the environment's sub-goal negatives")
    # --- environments ---
    num_envs: int = option(16, "parallel environments per rank")
    vectorization_mode: str = option("sync", "'sync' or 'async' vector environments")
    train_goals: list[str] | None = option(None, "training goals (a subset of the task set; default: the env's)")
    max_episode_steps: int | None = option(None, "episode timeout (default: the environment's)")
    view: str | None = option(None, "household domains: the frame the policy observes, 'room' or 'egocentric' "
                                    "(default: the environment's, 'room')")
    frame_source: str = option("auto", "the frame the VLM scores: 'observation', 'render' (household domains: the "
                                       "room from above, also under --view egocentric) or 'auto' (the observation "
                                       "when it is a frame)")
    max_attempts: int | None = option(None, "household Lift / PickPlace: the episode ends at this many pickups / "
                                            "drops, right or wrong (None: never; the environment's max_attempts)")
    heldout_distractors: bool = option(True, "household domains, training rooms only: held-out pairs may be "
                                             "distractors (--no-heldout-distractors: never; evaluation rooms are "
                                             "the environment's own)")
    num_objects: list[int] | None = option(None, "household domains, training rooms only: objects per room (goal "
                                                 "objects + distractors); several values are a curriculum, the k-th "
                                                 "over the k-th equal share of the iterations, e.g. 2 3 4 5 "
                                                 "(evaluation rooms are the environment's own)")
    frame_size: int | None = option(None, "side of the household domains' RGB frames (default: the environment's, "
                                      "224, as the default model's training frames; the reward resizes them)")
    # --- agent ---
    image_size: int = option(56, "side of the frames the policy sees (downsampled)")
    patch: int = option(8, "patch size of the policy's first convolution (one grid cell of the 7x7 rooms)")
    channels: int = option(64, "convolution channels of the pixel policy")
    hidden: int = option(256, "hidden units of the pixel policy")
    goal_heads: int = option(0, "goal-attention queries of the pixel policy: match maps of the goal against every "
                            "cell's content (0: FiLM only)")
    depth: int = option(3, "3x3 convolutions of the pixel policy (the first is the goal-conditioned stem; 0: a "
                           "per-cell 1x1 stem, keypoints and max-pool only)")
    goal_noise: float = option(0.0, "std of Gaussian noise on the policy's standardised goal embedding in PPO "
                                    "updates only (PPO and hindsight examples; not rollouts or evaluation; 0: off)")
    goal_encoding: str = option("text", "the policy's goal input: 'text' (the reward model's text embedding of the "
                                        "goal) or 'words' (which word stands at which position of the goal string, "
                                        "one-hot over the (position, word) pairs that vary among the training goals: "
                                        "binds each colour to its object where the text embedding does not)")
    goal_wordings: bool = option(False, "in PPO updates the policy reads each goal in one of its training "
                                        "wordings, drawn per example (vlmreward.envs.language; rollouts and "
                                        "evaluation: the goal's own string)")
    policy_precision: str = option("fp32", "'bf16': the policy's encoder runs under bfloat16 autocast (heads and "
                                           "losses float32), faster on CPUs with AVX-512-BF16")
    # --- PPO (CleanRL defaults) ---
    learning_rate: float = option(1e-3, "Adam learning rate")
    anneal_lr: bool = option(True, "linearly anneal the learning rate to 0")
    num_steps: int = option(32, "steps per environment per rollout")
    gamma: float = option(0.99, "discount")
    gae_lambda: float = option(0.95, "lambda of generalised advantage estimation")
    num_minibatches: int = option(4, "minibatches per epoch")
    update_epochs: int = option(4, "epochs per rollout")
    norm_adv: bool = option(True, "normalise advantages per minibatch")
    clip_coef: float = option(0.2, "PPO clip coefficient")
    clip_vloss: bool = option(True, "clipped value loss")
    ent_coef: float = option(0.01, "entropy bonus coefficient")
    vf_coef: float = option(0.5, "value loss coefficient")
    max_grad_norm: float = option(0.5, "global gradient-norm clip")
    target_kl: float | None = option(None, "stop the epochs early above this approximate KL")
    # --- hindsight relabelling (beyond the paper) ---
    hindsight_coef: float = option(0.0, "weight of goal-relabelled behaviour cloning: the actions of the last "
                                     "hindsight_window steps before a frame where a TRAINING goal is rewarded "
                                     "(by the trained reward: VLM or ground truth) are imitated for that goal "
                                     "(0: off)")
    hindsight_threshold: float | None = option(None, "VLM reward: relabel the goals with p(goal | frame) above this "
                                                     "(None: beta); a higher value relabels fewer goals, more "
                                                     "precisely")
    hindsight_window: int = option(4, "steps before an achieved goal whose actions are relabelled with it")
    hindsight_decay: float = option(0.7, "weight decay per step back from the achieved goal")
    hindsight_onset: bool = option(False, "relabel only frames where a goal BECOMES rewarded (not rewarded on the "
                                          "episode's frame before): a relation that already held, e.g. two "
                                          "objects adjacent from the start, is no achievement of the actions")
    # --- evaluation, logging, checkpoints ---
    eval_interval: int = option(10, "evaluate every this many iterations (0: only at the end)")
    eval_episodes: int = option(24, "evaluation episodes on training goals and on held-out goals each")
    checkpoint_interval: int = option(5, "checkpoint every this many iterations (and at the end)")


    def check(self) -> None:
        """Validates field values; raises ConfigError (a ValueError) naming the bad field."""
        require(self.reward in REWARDS, f"reward must be one of {REWARDS}, got {self.reward!r}")
        require(self.vectorization_mode in ("sync", "async"),
                f"vectorization_mode must be 'sync' or 'async', got {self.vectorization_mode!r}")
        for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "image_size",
                     "patch", "channels", "hidden", "hindsight_window", "threads", "checkpoint_interval"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require((self.num_envs * self.num_steps) % self.num_minibatches == 0,
                f"num_envs * num_steps ({self.num_envs * self.num_steps}) must be divisible by num_minibatches "
                f"({self.num_minibatches})")
        require(self.depth >= 0 and self.goal_heads >= 0,
                f"depth and goal_heads must be >= 0, got {self.depth}, {self.goal_heads}")
        require(self.goal_encoding in GOAL_ENCODINGS,
                f"goal_encoding must be one of {GOAL_ENCODINGS}, got {self.goal_encoding!r}")
        require(self.goal_encoding == "text" or not self.goal_wordings,
                "goal_wordings reads goals through the text tower: it needs goal_encoding 'text'")
        require(self.goal_noise >= 0, f"goal_noise must be >= 0, got {self.goal_noise}")  # NaN fails too
        require(self.frame_source in FRAME_SOURCES,
                f"frame_source must be one of {FRAME_SOURCES}, got {self.frame_source!r}")
        require(self.view is None or self.view in VIEWS, f"view must be one of {VIEWS}, got {self.view!r}")
        require(self.max_attempts is None or self.max_attempts >= 1,
                f"max_attempts must be None or >= 1, got {self.max_attempts}")
        require(0.0 <= self.threshold <= 1.0, f"threshold must be in [0, 1], got {self.threshold}")
        require(0.0 <= self.subgoal_threshold <= 1.0 and self.subgoal_coef >= 0,
                f"subgoal_threshold must be in [0, 1] and subgoal_coef >= 0, got {self.subgoal_threshold}, "
                f"{self.subgoal_coef}")
        require(self.hindsight_threshold is None or 0.0 <= self.hindsight_threshold <= 1.0,
                f"hindsight_threshold must be None or in [0, 1], got {self.hindsight_threshold}")
        require(self.reward_at in REWARD_AT, f"reward_at must be one of {REWARD_AT}, got {self.reward_at!r}")
        require(self.reward_at == "step" or not self.terminate_on_success,
                "reward_at 'termination' rewards the environment's own terminal frames: VLM success cannot also "
                "end the episode (leave terminate_on_success unset)")
        require(self.reward_mode in MODES, f"reward_mode must be one of {MODES}, got {self.reward_mode!r}")
        require(self.scorer in SCORERS, f"scorer must be one of {SCORERS}, got {self.scorer!r}")
        require(self.reward_mode != "projection" or bool(self.baseline),
                "reward_mode 'projection' needs --baseline (VLM-RM's baseline prompt)")
        require(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}")
        require(self.policy_precision in ("fp32", "bf16"),
                f"policy_precision must be 'fp32' or 'bf16', got {self.policy_precision!r}")
        require(self.hindsight_coef >= 0 and 0.0 < self.hindsight_decay <= 1.0,
                f"hindsight_coef must be >= 0 and hindsight_decay in (0, 1], got {self.hindsight_coef}, "
                f"{self.hindsight_decay}")
        require(self.eval_interval >= 0 and self.eval_episodes >= 0,
                f"eval_interval and eval_episodes must be >= 0, got {self.eval_interval}, {self.eval_episodes}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and one flag per ``Args`` field (:mod:`vlmreward.config`)."""
    config.add_arguments(parser, Args)


def parse_args(namespace: argparse.Namespace) -> Args:
    """Args from the defaults, then the ``--config`` YAML, then the flags given on the command line."""
    return config.from_namespace(Args, namespace)


def check_args(args: Args) -> Args:
    """Validates ``args`` (``Args.check``); returns it."""
    return config.check(args)


# ----------------------------------------------------------------------------------------------------------
# the algorithm's pieces
# ----------------------------------------------------------------------------------------------------------
def curriculum_value(values, iteration: int, num_iterations: int):
    """The value of a curriculum ``values`` at ``iteration`` (1-based) of ``num_iterations``: values[k] over the
    k-th of len(values) equal shares of the iterations."""
    return values[min(len(values) - 1, (iteration - 1) * len(values) // num_iterations)]


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


def step_achievements(held: torch.Tensor, before: torch.Tensor, terminated, done, args: Args):
    """(achieved, next ``before``) of one rollout step for hindsight relabelling.

    held bool (B, G'): the goals the trained reward's model holds true on the frame after the action
    (:func:`vlmreward.rl.task.achieved_goals`); before bool (B, G'): those held on the episode's previous frame
    (all False after a reset); terminated, done bool (B,). A goal is achieved where the reward can pay it (every
    frame, or under ``--reward-at termination`` the environment's terminal frames) and, with ``--hindsight-onset``,
    where it did not hold on the frame before (compared with every frame, rewarded or not).
    """
    now = held & torch.as_tensor(np.asarray(terminated, bool))[:, None] if args.reward_at == "termination" else held
    achieved = now & ~before if args.hindsight_onset else now
    return achieved, held & ~torch.as_tensor(np.asarray(done, bool))[:, None]


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


class Rollout:
    """(T,B) buffers of one rollout; ``x`` holds prepared observations, ``valid`` = not a reset step."""

    def __init__(self, T: int, B: int, x_example: torch.Tensor, num_hindsight_goals: int, device):
        self.x = torch.zeros((T, B) + x_example.shape[1:], dtype=x_example.dtype, device=device)
        self.goal = torch.zeros((T, B), dtype=torch.int64, device=device)
        self.actions = torch.zeros((T, B), dtype=torch.int64, device=device)
        for name in ("logprobs", "rewards", "terminated", "ended", "valid", "values"):
            setattr(self, name, torch.zeros((T, B), device=device))
        self.achieved = torch.zeros((T, B, num_hindsight_goals), dtype=torch.bool)

    def flatten(self, advantages: torch.Tensor) -> dict:
        """The (T*B,) batch the epochs sample minibatches from; returns = advantages + values."""
        return {"x": self.x.reshape((-1,) + self.x.shape[2:]), "goal": self.goal.reshape(-1),
                "actions": self.actions.reshape(-1), "logprobs": self.logprobs.reshape(-1),
                "advantages": advantages.reshape(-1), "returns": (advantages + self.values).reshape(-1),
                "values": self.values.reshape(-1), "valid": self.valid.reshape(-1)}


def ppo_loss(learner, rollout: Rollout, b: dict, mb: torch.Tensor, hs, args: Args):
    """Clipped-objective loss of one minibatch (Schulman et al., arXiv 1707.06347), reset steps masked out.

    ``b``: the flattened rollout (x, goal, actions, logprobs, advantages, returns, values, valid); ``hs``:
    hindsight examples (t, b, goal, weight) or None; they ride in the same forward (one DDP call).
    Returns (loss, stats dict of detached tensors)."""
    m = b["valid"][mb]
    n = m.sum().clamp_min(1.0)

    def mmean(v):
        return (v * m).sum() / n

    x, g, a = b["x"][mb], b["goal"][mb], b["actions"][mb]
    if hs is not None:
        pick = torch.randint(len(hs[0]), (min(len(hs[0]), len(mb)),))
        ht, hb, hg, hw = (v[pick].to(mb.device) for v in hs)
        x, g, a = torch.cat([x, rollout.x[ht, hb]]), torch.cat([g, hg]), torch.cat([a, rollout.actions[ht, hb]])
    _, newlogprob, entropy, newvalue = learner(x, g, a)
    stats = {}
    if hs is not None:
        stats["hindsight_bc"] = -(hw * newlogprob[len(mb):]).sum() / hw.sum()
        newlogprob, entropy, newvalue = newlogprob[:len(mb)], entropy[:len(mb)], newvalue[:len(mb)]
    logratio = newlogprob - b["logprobs"][mb]
    ratio = logratio.exp()
    with torch.no_grad():
        stats["old_approx_kl"] = mmean(-logratio)
        stats["approx_kl"] = mmean((ratio - 1) - logratio)
        stats["clipfrac"] = mmean(((ratio - 1.0).abs() > args.clip_coef).float())
    adv = b["advantages"][mb]
    if args.norm_adv:
        mean = mmean(adv)
        std = (mmean((adv - mean) ** 2) * n / (n - 1).clamp_min(1.0)).sqrt()
        adv = (adv - mean) / (std + 1e-8)
    pg_loss = mmean(torch.max(-adv * ratio, -adv * ratio.clamp(1 - args.clip_coef, 1 + args.clip_coef)))
    ret, old_v = b["returns"][mb], b["values"][mb]
    if args.clip_vloss:
        v_clipped = old_v + (newvalue - old_v).clamp(-args.clip_coef, args.clip_coef)
        v_loss = 0.5 * mmean(torch.max((newvalue - ret) ** 2, (v_clipped - ret) ** 2))
    else:
        v_loss = 0.5 * mmean((newvalue - ret) ** 2)
    entropy_loss = mmean(entropy)
    loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
    if hs is not None:  # goal-relabelled behaviour cloning
        loss = loss + args.hindsight_coef * stats["hindsight_bc"]
    stats.update(policy_loss=pg_loss, value_loss=v_loss, entropy=entropy_loss)
    return loss, {k: v.detach() for k, v in stats.items()}


# ----------------------------------------------------------------------------------------------------------
# setup
# ----------------------------------------------------------------------------------------------------------
def _resume(args: Args):
    """(args, state): a resumed run continues with its own saved settings; only the budget and presentation
    may change."""
    if not args.resume:
        return args, None
    state = load_checkpoint(args.resume)
    saved = config.check(Args(**state["meta"]["args"]))
    run_dir = checkpoint_path(args.resume).parent
    return dataclasses.replace(saved, total_timesteps=args.total_timesteps, progress=args.progress,
                               resume=args.resume, run_dir=str(run_dir)), state


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


def _prepare_run_dir(run_dir: Path, args: Args) -> None:
    """Creates the run folder and writes args.json, after the run has been set up (a failed start leaves an
    existing run untouched); a fresh run never replaces another run's checkpoint."""
    if not args.resume and (run_dir / CHECKPOINT).exists():
        raise ValueError(f"run folder {run_dir} already holds a run ({CHECKPOINT}): resume it with "
                         f"--resume {run_dir}, or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    fileio.remove_temporaries(run_dir)  # leftovers of writes a kill interrupted
    fileio.write_json(run_dir / "args.json", dataclasses.asdict(args))


def _warn_if_never_fired(fired: float, prob_max: float, args: Args, steps: int) -> None:
    if fired:
        return
    if prob_max > args.threshold:  # p passed beta only on frames that earn no reward (--reward-at termination)
        warnings.warn(f"the VLM reward has not fired in {steps} steps: p(goal | frame) passed beta = {args.threshold} "
                      f"(largest {prob_max:.3f}) only on frames that are not rewarded (--reward-at {args.reward_at}: "
                      "the frames where the environment ends the episode); the agent has earned no reward yet.",
                      RuntimeWarning, stacklevel=3)
        return
    warnings.warn(f"the VLM reward has not fired in {steps} steps: the largest p(goal | frame) seen was "
                  f"{prob_max:.3f}, below threshold beta = {args.threshold}; the agent is training on a reward "
                  "of 0. Choose beta from the model's precision-recall curve (`vlmreward evaluate` prints the "
                  "best-F1 beta).", RuntimeWarning, stacklevel=3)


def _progress_bar(args: Args, rank: int, total: int, done: int):
    if not args.progress or rank != 0 or done >= total:
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=done, unit="step", dynamic_ncols=True, desc=args.env_id)


# ----------------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------------
def train(args: Args) -> dict:
    """Trains PPO per ``args``; returns {"run_dir", "global_step", "iterations", "steps_per_second", "eval",
    "png", ...} and writes them to ``<run_dir>/results.json``. See the module doc.

    Raises ValueError / FileNotFoundError for bad settings, an unknown environment or model, a corrupt
    checkpoint, or a fresh run pointed at another run's folder."""
    args, state = _resume(check_args(dataclasses.replace(args)))
    world, rank, device = _setup_distributed(args)
    torch.set_num_threads(args.threads)  # 1 by default: a second spinning OpenMP thread slows small ops ~100x
    torch.backends.cudnn.deterministic = args.torch_deterministic
    run_dir = Path(args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.reward}__s{args.seed}")
    random.seed(args.seed + rank)
    np.random.seed(args.seed + rank)
    torch.manual_seed(args.seed + rank)
    task = Task(args, device)
    agent = Agent(task.observation_shape, task.num_actions, task.goal_embeddings,
                  train_goal_ids=[task.goal_id(g) for g in task.train_goals], image_size=args.image_size,
                  patch=args.patch, channels=args.channels, hidden=args.hidden, goal_heads=args.goal_heads,
                  depth=args.depth, precision=args.policy_precision, goal_noise=args.goal_noise,
                  wording_embeddings=task.wording_embeddings).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    start_iteration, global_step, last_eval = 1, 0, {}
    if state is not None:
        agent.load_state_dict(state["agent"])
        optimizer.load_state_dict(state["optimizer"])
        start_iteration, global_step = state["iteration"] + 1, state["global_step"]
        last_eval = state["meta"].get("eval", {})
    if rank == 0:
        _prepare_run_dir(run_dir, args)
    learner = nn.parallel.DistributedDataParallel(agent) if world > 1 else agent
    B, T = args.num_envs, args.num_steps
    batch_size, minibatch_size = B * T, B * T // args.num_minibatches
    num_iterations = max(1, args.total_timesteps // (batch_size * world))
    logger = RunLogger(run_dir, rank == 0, resume_step=global_step if state else None)
    hindsight_ids = [task.goal_id(g) for g in task.train_goals] if args.hindsight_coef > 0 and task.language else []
    meta = {"args": dataclasses.asdict(args), "goals": list(task.task_set), "train_goals": list(task.train_goals),
            "heldout_goals": list(task.heldout_goals), "env_kwargs": task.env_kwargs,
            "observation_shape": list(task.observation_shape), "num_actions": task.num_actions}

    def run_eval(iteration: int) -> dict:
        out = {}
        for split, goals in (("train", task.train_goals), ("heldout", task.heldout_goals)):
            out[split] = r = evaluate_agent(agent, task, list(goals), args.eval_episodes,
                                            seed=args.seed + 7919 * iteration)
            for key in ("success", "gt_return", "vlm_return") if r["episodes"] else ():
                logger.log(f"eval/{split}_{key}", r[key], global_step)
        return out

    envs = make_envs(task, B, task.train_goals, mode=args.vectorization_mode, training=True)
    env_seed = args.seed + 10_000 * rank + 1_000_003 * (start_iteration - 1)  # new episodes after a resume
    obs, infos = envs.reset(seed=[env_seed + i for i in range(B)])
    raw, goal_ids = split_observation(task, obs, infos, B)
    next_x, next_goal = agent.prepare(raw), goal_ids.to(device)
    next_done = torch.zeros(B, dtype=torch.bool, device=device)  # previous transition ended: a reset step next
    buf = Rollout(T, B, next_x, len(hindsight_ids), device)
    before = torch.zeros(B, len(hindsight_ids), dtype=torch.bool)  # rewarded on the episode's previous frame
    recent: dict[str, list[float]] = {"gt_success": [], "return": []}
    t0, steps0, fired, prob_max = time.time(), global_step, 0.0, 0.0
    check_fires = args.reward_mode == "binary" and task.reward_model is not None  # FIRE_CHECK_ROLLOUTS
    bar = _progress_bar(args, rank, num_iterations * batch_size * world, global_step)

    for iteration in range(start_iteration, num_iterations + 1):
        # reseeding per iteration makes a resumed learner draw the same samples as an uninterrupted one
        torch.manual_seed(args.seed * 100_003 + rank * 1_009 + iteration)
        if args.anneal_lr:
            optimizer.param_groups[0]["lr"] = args.learning_rate * (1.0 - (iteration - 1.0) / num_iterations)

        if args.num_objects:  # curriculum stage: takes effect at each sub-environment's next reset
            rooms = curriculum_value(args.num_objects, iteration, num_iterations)
            if rooms != envs.unwrapped.get_attr("num_objects")[0]:
                envs.unwrapped.set_attr("num_objects", rooms)
            logger.log("curriculum/num_objects", float(rooms), global_step)

        # ---- rollout ----
        subgoal_frames = 0.0
        for step in range(T):
            global_step += B * world
            buf.x[step], buf.goal[step], buf.valid[step] = next_x, next_goal, (~next_done).float()
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_x, next_goal)
            buf.values[step], buf.actions[step], buf.logprobs[step] = value, action, logprob
            obs, reward, term, trunc, infos = envs.step(action.cpu().numpy())
            done = np.logical_or(term, trunc)
            buf.rewards[step] = torch.as_tensor(np.asarray(reward), dtype=torch.float32, device=device)
            buf.terminated[step] = torch.as_tensor(term, dtype=torch.float32, device=device)
            buf.ended[step] = torch.as_tensor(done, dtype=torch.float32, device=device)
            if hindsight_ids:
                held = torch.from_numpy(achieved_goals(task, envs, infos, hindsight_ids))
                buf.achieved[step], before = step_achievements(held, before, term, done, args)
            if "subgoal" in infos:
                subgoal_frames += float(np.sum(infos["subgoal"]))
            if check_fires and iteration < start_iteration + FIRE_CHECK_ROLLOUTS:
                live = ~next_done.cpu().numpy()
                fired += float(np.sum(np.where(live, infos["vlm_reward"], 0.0)))
                prob_max = max(prob_max, float(np.max(np.where(live, infos["vlm_prob"], 0.0))))
            raw, goal_ids = split_observation(task, obs, infos, B)
            next_x, next_goal, next_done = agent.prepare(raw), goal_ids.to(device), torch.as_tensor(done, device=device)
            log_episodes(logger, infos, global_step, recent, vlm=task.reward_model is not None)
        if args.subgoal_coef > 0:
            logger.log("shaping/subgoal_rate", subgoal_frames / batch_size, global_step)
        if check_fires and iteration == start_iteration + FIRE_CHECK_ROLLOUTS - 1 and rank == 0:
            _warn_if_never_fired(fired, prob_max, args, FIRE_CHECK_ROLLOUTS * batch_size)

        # ---- generalised advantage estimation ----
        with torch.no_grad():
            advantages = compute_advantages(buf.rewards, buf.values, buf.terminated, buf.ended,
                                            agent.get_value(next_x, next_goal), args)
        b = buf.flatten(advantages)
        hs = None
        if hindsight_ids:  # relabelled (step, env, goal, weight) examples of this rollout
            hs = hindsight_samples(buf.achieved, buf.valid.cpu(), buf.ended.cpu(), torch.tensor(hindsight_ids),
                                   args.hindsight_window, args.hindsight_decay)
            logger.log("hindsight/examples", float(len(hs[0])), global_step)
            hs = hs if len(hs[0]) else None

        # ---- clipped-objective epochs ----
        clipfracs, stats = [], {}
        for epoch in range(args.update_epochs):
            order = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                loss, stats = ppo_loss(learner, buf, b, order[start:start + minibatch_size], hs, args)
                clipfracs.append(float(stats["clipfrac"]))
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()
            if args.target_kl is not None:
                kl = stats["approx_kl"].clone()
                if world > 1:
                    dist.all_reduce(kl)
                    kl /= world
                if kl > args.target_kl:
                    break

        # ---- logging, evaluation, checkpoint ----
        sps = (global_step - steps0) / max(time.time() - t0, 1e-9)
        log_update(logger, global_step, optimizer, stats, clipfracs, b, sps)
        last = iteration == num_iterations
        if rank == 0 and ((args.eval_interval and iteration % args.eval_interval == 0) or last):
            last_eval = run_eval(iteration)
        if rank == 0 and (iteration % args.checkpoint_interval == 0 or last):
            logger.flush()  # every row up to this checkpoint is on disk before the checkpoint says so
            save_checkpoint(run_dir / CHECKPOINT, agent=agent, optimizer=optimizer, iteration=iteration,
                            global_step=global_step, meta=dict(meta, eval=last_eval))
        if bar is not None:
            bar.update(batch_size * world)
            recent = {k: v[-100:] for k, v in recent.items()}
            if recent["gt_success"]:
                bar.set_postfix(sps=f"{sps:.0f}", gt_success=f"{np.mean(recent['gt_success']):.2f}",
                                ret=f"{np.mean(recent['return']):.2f}")

    envs.close()
    if bar is not None:
        bar.close()
    if rank == 0 and not last_eval:  # resumed after the last checkpoint of a run killed before its evaluation
        last_eval = run_eval(num_iterations)
    result = {"run_dir": str(run_dir), "global_step": global_step, "start_iteration": start_iteration,
              "iterations": num_iterations, "steps_per_second": None, "eval": last_eval}
    if rank == 0:
        if global_step > steps0:
            result["steps_per_second"] = (global_step - steps0) / max(time.time() - t0, 1e-9)
        logger.close()
        title = f"{args.env_id}, PPO on {'VLM' if args.reward == 'vlm' else 'ground-truth'} reward, seed {args.seed}"
        result["png"] = str(plot_learning_curves(run_dir / "metrics.csv", run_dir / "learning_curves.png", title))
        fileio.write_json(run_dir / "results.json", result)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return result


def run(namespace: argparse.Namespace) -> int:
    """`vlmreward train`: parse flags + config, train, print ground-truth success and the PNG path."""
    result = train(parse_args(namespace))
    if int(os.environ.get("RANK", "0")) == 0:
        for split, name in (("train", "training goals"), ("heldout", "held-out goals")):
            r = result["eval"].get(split)
            if r and r["episodes"]:
                print(f"ground-truth success on {name}: {r['success']:.1%} ({r['episodes']} episodes, "
                      f"ground-truth return {r['gt_return']:.2f})")
        if result["steps_per_second"]:
            print(f"steps per second: {result['steps_per_second']:.0f}")
        print(f"learning curves: {result['png']}")
        print(f"checkpoint: {Path(result['run_dir']) / CHECKPOINT}")
    return 0
