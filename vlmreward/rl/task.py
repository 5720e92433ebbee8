"""What the trainer runs on: the environment's goals, the reward model, vector environments, agent evaluation.

:class:`Task` reads the environment's declaration (:mod:`vlmreward.envs`: goal-reaching or per-step) and builds
the goal bank and reward model of Baumli et al. (arXiv 2312.09187, eqs. 1-2) once; :func:`make_envs` stacks
the wrappers a training or evaluation run needs, in this order::

    gym.make_vec(env_id, NEXT_STEP autoreset)      sub-envs wrapped by NoSuccessTermination under a VLM reward
      -> VectorVLMRewardWrapper                    VLM reward of every sub-env in one batched call ('vlm' only)
      -> TerminalReward                            the reward of the env's own terminal steps (--reward-at termination)
      -> SubgoalShaping                            potential-based sub-goal shaping (training, --subgoal-coef)
      -> EpisodeStatistics                         per-episode return / VLM return / ground truth
"""
from __future__ import annotations

import difflib

import gymnasium as gym
import numpy as np
import torch

from vlmreward.envs import check_env_id, ends_on_success, task_sets
from vlmreward.wrappers import (EpisodeStatistics, NoSuccessTermination, SubgoalShaping, TerminalReward,
                                VectorVLMRewardWrapper)


class Task:
    """Goals, reward model and environment settings of a training run (``args``: a ``vlmreward.rl.ppo.Args``).

    Attributes: ``language`` (the env has language goals), ``task_set`` / ``train_goals`` / ``heldout_goals``
    (tuples of goal strings), ``bank`` (GoalBank over the task set; negatives: the task set plus those of
    ``args.negatives_from``), ``reward_model`` (RewardModel in 'vlm' mode, else None), ``subgoal_model``
    (RewardModel over the environment's sub-goal task set in 'vlm' mode with ``args.subgoal_coef > 0``, else
    None), ``goal_embeddings`` float32 (G,E) on the CPU (the policy's goal input: text embeddings, or
    :func:`word_features` with ``args.goal_encoding == 'words'``), ``wording_embeddings`` float32 (G,W,E) on the
    CPU with ``args.goal_wordings`` (row g: goal g in each of its W training wordings,
    :func:`vlmreward.envs.language.wordings`, cycled to the longest; else None), ``goal_reaching`` (the
    environment's declared style), ``terminate_on_success`` (VLM success ends an episode), ``env_kwargs``
    (gym.make keyword arguments), ``observation_shape``, ``num_actions``.
    ``fire_check=False``: no warning that the binary reward always / never fired (a trained agent under
    evaluation may hold its goal on every frame). Raises ValueError for an unknown id, a non-Discrete action
    space, goals outside the task set, or a VLM reward asked of an environment without language goals.
    """

    def __init__(self, args, device: torch.device, *, fire_check: bool = True):
        check_env_id(args.env_id)
        probe = gym.make(args.env_id)
        base = probe.unwrapped
        self.args = args
        self.language = hasattr(base, "task_set")
        self.has_task_labels = hasattr(base, "task_labels")  # ground truth of the whole task set in one call
        self.observation_shape = tuple(probe.observation_space.shape)
        if not isinstance(probe.action_space, gym.spaces.Discrete):
            raise ValueError(f"{args.env_id}: the trainer needs a Discrete action space, got {probe.action_space}")
        self.num_actions = int(probe.action_space.n)
        probe.close()
        if args.view is not None and not hasattr(base, "view"):
            raise ValueError(f"{args.env_id} has no views: --view applies to the household domains")
        if not args.heldout_distractors and not hasattr(base, "heldout_distractors"):
            raise ValueError(f"{args.env_id} has no distractors: --no-heldout-distractors applies to the household "
                             "domains")
        if args.num_objects:
            if not hasattr(base, "num_objects"):
                raise ValueError(f"{args.env_id} has no objects: --num-objects applies to the household domains")
            for n in args.num_objects:  # the environment's own check of each curriculum stage
                gym.make(args.env_id, num_objects=n).close()
        if args.max_attempts is not None and not hasattr(base, "max_attempts"):
            raise ValueError(f"{args.env_id} has no attempts: --max-attempts applies to household Lift / PickPlace")
        if args.subgoal_coef > 0 and not getattr(base, "subgoal_task_set", ()):
            raise ValueError(f"{args.env_id} declares no sub-goals: --subgoal-coef applies to vlmreward/PickPlace-v0")
        self.reward_model = self.bank = self.subgoal_model = None
        self.goal_reaching = ends_on_success(base)
        self.terminate_on_success = (self.goal_reaching and args.reward_at == "step"
                                     if args.terminate_on_success is None else args.terminate_on_success)
        if not self.language:  # a plain gymnasium env: one implicit goal, ground-truth reward only
            if args.reward == "vlm":
                raise ValueError(f"{args.env_id} has no language goals (no task_set): use --reward gt or a "
                                 "vlmreward/* environment")
            if args.train_goals or args.goal_wordings:
                raise ValueError(f"{args.env_id} has no language goals; --train-goals and --goal-wordings do "
                                 "not apply")
            self.task_set, self.train_goals, self.heldout_goals = ("",), ("",), ()
            self.goal_embeddings, self.wording_embeddings = torch.zeros(1, 0), None
            self.env_kwargs = _env_kwargs(args, None)
            return
        self.task_set = tuple(base.task_set)
        # default: what the environment's reset samples by itself (household: its training goals; classic
        # control: the goal it is named after, e.g. "the pole is upright")
        self.train_goals = tuple(args.train_goals) if args.train_goals else tuple(base.goal_pool)
        for g in self.train_goals:
            if g not in self.task_set:
                close = difflib.get_close_matches(g, self.task_set, n=3)
                raise ValueError(f"goal {g!r} is not in the task set of {args.env_id}"
                                 + (f"; did you mean {close}?" if close else ""))
        self.heldout_goals = tuple(g for g in base.heldout_goals if g not in self.train_goals)
        from vlmreward.goals import GoalBank
        from vlmreward.models import load_model
        from vlmreward.reward import RewardModel

        model = load_model(args.model, args.pretrained, device=str(device))
        # frames at the environment's own size by default (household: 224), resized by the reward's preprocess as
        # the default model's training frames were: drawn natively at its 84-pixel input, thin silhouettes
        # (rings) differ enough that it fires on rooms where no goal holds (docs/results/training.md)
        self.env_kwargs = _env_kwargs(args, args.frame_size)
        kw = {"templates": tuple(args.templates)} if args.templates else {}
        negatives = list(self.task_set) + task_sets(args.negatives_from or (), self.task_set)
        self.bank = GoalBank(model, list(self.task_set), negatives=negatives,
                             num_negatives=args.num_negatives, seed=args.seed, **kw)
        self.goal_embeddings = (word_features(self.bank.goals, self.train_goals) if args.goal_encoding == "words"
                                else self.bank.goal_embeddings.float().cpu())
        self.wording_embeddings = None
        if args.goal_wordings:
            self.wording_embeddings = _wording_embeddings(model, self.bank, args.templates)
        if args.reward == "vlm":
            self.reward_model = RewardModel(model, self.bank, threshold=args.threshold, mode=args.reward_mode,
                                            baseline=args.baseline, alpha=args.alpha, scorer=args.scorer,
                                            fire_check_frames=1000 if fire_check else 0)
            if args.subgoal_coef > 0:  # the sub-goals' own bank: Lift's goals against Lift's and Find's
                model.reuse_last_images = True  # the sub-goals score the goal reward's frames: one image-tower pass
                sub = list(base.subgoal_task_set)
                sub_bank = GoalBank(model, sub, negatives=sub + list(base.subgoal_negatives), **kw)
                self.subgoal_model = RewardModel(model, sub_bank, threshold=args.subgoal_threshold,
                                                 fire_check_frames=0)

    def goal_id(self, goal: str) -> int:
        return self.bank.index(goal) if self.language else 0


def word_features(goals, train_goals) -> torch.Tensor:
    """float32 (G,K) goal features: entry (g, k) is 1 when goal g has word w_k at position i_k (whitespace words,
    lower case), over the K (position, word) pairs that some but not all of ``train_goals`` have. A learned
    linear map of them (the policy's FiLM and goal queries) is a sum of per-position word vectors, so the colour
    before the first object and the one before the second stay apart, and a held-out goal combines words seen
    in training. Pairs absent from or constant over the training goals carry no information and are left out.
    Raises ValueError when no pair varies (fewer than two distinct training goals)."""
    words = [tuple(g.lower().split()) for g in goals]
    train = [tuple(g.lower().split()) for g in train_goals]
    counts: dict[tuple[int, str], int] = {}
    for ws in train:
        for key in enumerate(ws):
            counts[key] = counts.get(key, 0) + 1
    keys = sorted(k for k, n in counts.items() if n < len(train))
    if not keys:
        raise ValueError("goal_encoding 'words' needs training goals that differ in some word")
    column = {k: j for j, k in enumerate(keys)}
    out = torch.zeros(len(goals), len(keys))
    for g, ws in enumerate(words):
        for key in enumerate(ws):
            if key in column:
                out[g, column[key]] = 1.0
    return out


def _wording_embeddings(model, bank, templates) -> torch.Tensor:
    """(G,W,E) float32 CPU embeddings of every bank goal in each of its training wordings (the canonical one
    first), embedded as the bank embeds goals; goals with fewer wordings repeat theirs."""
    from vlmreward.envs.language import reword, wordings
    from vlmreward.goals import embed_strings

    width = max(len(wordings(g)) for g in bank.goals)
    strings = [reword(g, w, "train") for g in bank.goals for w in range(width)]
    emb = embed_strings(model, strings, tuple(templates) if templates else ("{}",), bank.template_ensembling)
    return emb.float().cpu().view(len(bank.goals), width, -1).clone()


def _env_kwargs(args, frame_size: int | None) -> dict:
    kwargs = {}
    if args.max_episode_steps is not None:
        kwargs["max_episode_steps"] = args.max_episode_steps
    if frame_size is not None:
        kwargs["frame_size"] = frame_size
    if args.view is not None:
        kwargs["view"] = args.view
    if args.max_attempts is not None:
        kwargs["max_attempts"] = args.max_attempts
    return kwargs


def make_envs(task: Task, num_envs: int, goals, *, mode: str = "sync", training: bool = False) -> EpisodeStatistics:
    """A vector env over ``task`` (NEXT_STEP autoreset) with the wrappers of the module doc; ``training``: the
    rollout environments, which also take the training-only room options (``heldout_distractors``,
    ``num_objects``)."""
    vlm = task.reward_model is not None
    # under a VLM reward the ground truth never ends an episode, whether or not VLM success does
    wrappers = [NoSuccessTermination] if vlm and task.goal_reaching else None
    kwargs = dict(task.env_kwargs)
    if training and not task.args.heldout_distractors:
        kwargs["heldout_distractors"] = False
    if training and task.args.num_objects:  # the curriculum's first stage; train() sets the later ones
        kwargs["num_objects"] = task.args.num_objects[0]
    if task.language:
        kwargs["render_mode"] = "rgb_array"
        kwargs["goal_pool"] = tuple(goals)
    vector_kwargs = {"shared_memory": False} if mode == "async" else {}
    envs = gym.make_vec(task.args.env_id, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs,
                        wrappers=wrappers, **kwargs)
    if vlm:
        envs = VectorVLMRewardWrapper(envs, task.reward_model, terminate_on_success=task.terminate_on_success,
                                      keep_env_reward=True, score_all_goals=task.args.hindsight_coef > 0,
                                      frame_source=task.args.frame_source)
    if vlm and task.args.reward_at == "termination":
        envs = TerminalReward(envs)
    if training and task.args.subgoal_coef > 0:
        envs = SubgoalShaping(envs, task.args.subgoal_coef, task.args.gamma, task.subgoal_model)
    return EpisodeStatistics(envs)


def split_observation(task: Task, obs, infos, num_envs: int):
    """(raw observation batch, goal ids int64 (B,)) from a vector env's observation and info."""
    if isinstance(obs, dict):
        return obs["observation"], torch.as_tensor(np.asarray(obs["goal_id"]), dtype=torch.int64)
    if task.language:
        return obs, torch.tensor([task.goal_id(g) for g in infos["goal"]], dtype=torch.int64)
    return obs, torch.zeros(num_envs, dtype=torch.int64)


def achieved_goals(task: Task, envs, infos, goal_ids: list[int]) -> np.ndarray:
    """bool (B, len(goal_ids)): which of ``goal_ids`` the TRAINED reward rewards on the frame after the action
    (under ``--reward-at termination`` the trainer keeps them on the environment's terminal frames only).

    VLM mode: p(goal | frame) > ``args.hindsight_threshold`` (default beta) for every goal (``info["vlm_probs_all"]``,
    the same model call); ground-truth mode: the environments' own ``goal_success``. Each mode relabels from its
    own reward and nothing else.
    """
    if task.reward_model is not None:
        beta = task.args.hindsight_threshold
        beta = task.reward_model.threshold if beta is None else beta
        return np.asarray(infos["vlm_probs_all"])[:, goal_ids] > beta
    if task.has_task_labels:  # one scan of each room for the whole task set (PickPlace: thousands of goals);
        # the bank's goals are the task set in order, so a bank id is a task_labels column
        return np.stack(envs.unwrapped.call("task_labels"))[:, goal_ids]
    goals = [task.bank.goals[g] for g in goal_ids]
    return np.stack([np.asarray(envs.unwrapped.call("goal_success", g), dtype=bool) for g in goals], axis=1)


@torch.no_grad()
def evaluate_agent(agent, task: Task, goals, episodes: int, *, seed: int, deterministic: bool = False) -> dict:
    """Ground-truth evaluation of an agent: ``episodes`` episodes (goals cycled) in one environment wrapped as
    in training. Returns {"success": mean ground-truth success (any step), "gt_return", "vlm_return": means,
    "episodes": int}; NaN means and 0 episodes when ``goals`` is empty."""
    if not goals or episodes < 1:
        return {"success": float("nan"), "gt_return": float("nan"), "vlm_return": float("nan"), "episodes": 0}
    envs = make_envs(task, 1, goals)
    rng = np.random.default_rng(seed)
    stats = []
    try:
        for e in range(episodes):
            options = {"goal": goals[e % len(goals)]} if task.language else None
            obs, infos = envs.reset(seed=int(rng.integers(2 ** 31)), options=options)
            while "episode" not in infos:
                x, goal_ids = split_observation(task, obs, infos, 1)
                action = agent.get_action_and_value(agent.prepare(x), goal_ids, deterministic=deterministic)[0]
                obs, _, _, _, infos = envs.step(action.cpu().numpy())
            stats.append({k: float(v[0]) for k, v in infos["episode"].items()})
    finally:
        envs.close()
    return {"success": float(np.mean([s["gt_success"] for s in stats])),
            "gt_return": float(np.mean([s["gt_r"] for s in stats])),
            "vlm_return": float(np.mean([s["vlm_r"] for s in stats])), "episodes": episodes}
