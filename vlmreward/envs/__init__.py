"""Language-goal environments with exact ground-truth success for every goal (see docs/environments.md).

Registered ids (``import vlmreward`` registers them):
    vlmreward/Find-v0, vlmreward/Lift-v0, vlmreward/PickPlace-v0   MiniGrid household objects, frame observations
    vlmreward/CartPoleUpright-v0, vlmreward/MountainCarFlag-v0      classic control, state observations

What each environment IS is declared here, once (:class:`EnvDeclaration`), and read by the trainer, the
wrappers' defaults, ``vlmreward enjoy``, the datasets and the offline evaluation:

* reward style: ``"goal_reaching"`` (the paper's tasks: the reward fires when the goal is reached and the
  episode ends there) or ``"per_step"`` (the VLM-RM peer's classic control: every step spent in the goal state
  is rewarded, the episode ends on the environment's own failure or timeout). An environment that declares
  nothing (any other gymnasium env) is goal-reaching.
* family: the name results are reported under ("Find", "CartPoleUpright", ...).
* state sampler: ``env.unwrapped.sample_states(n, seed) -> (frames, labels)``, randomised states for datasets.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from gymnasium.envs.registration import register, registry

from vlmreward.envs.classic import CartPoleUpright, MountainCarFlag
from vlmreward.envs.expert import expert_action
from vlmreward.envs.household import HELDOUT_PAIRS, HouseholdEnv

GOAL_REACHING, PER_STEP = "goal_reaching", "per_step"
REWARD_STYLES = (GOAL_REACHING, PER_STEP)


@dataclass(frozen=True)
class EnvDeclaration:
    """What the library needs to know about a registered environment (see the module doc)."""
    env_id: str
    family: str
    reward_style: str
    entry_point: str
    kwargs: dict
    max_episode_steps: int | None = None
    reward_threshold: float | None = None


_HOUSEHOLD = "vlmreward.envs.household:HouseholdEnv"
DECLARATIONS: dict[str, EnvDeclaration] = {d.env_id: d for d in (
    EnvDeclaration("vlmreward/Find-v0", "Find", GOAL_REACHING, _HOUSEHOLD, {"family": "find"}),
    EnvDeclaration("vlmreward/Lift-v0", "Lift", GOAL_REACHING, _HOUSEHOLD, {"family": "lift"}),
    EnvDeclaration("vlmreward/PickPlace-v0", "PickPlace", GOAL_REACHING, _HOUSEHOLD, {"family": "pickplace"}),
    EnvDeclaration("vlmreward/CartPoleUpright-v0", "CartPoleUpright", PER_STEP,
                   "vlmreward.envs.classic:CartPoleUpright", {}, 500, 475.0),
    EnvDeclaration("vlmreward/MountainCarFlag-v0", "MountainCarFlag", PER_STEP,
                   "vlmreward.envs.classic:MountainCarFlag", {}, 200, -110.0),
)}
ENV_IDS = tuple(DECLARATIONS)

for _d in DECLARATIONS.values():
    if _d.env_id not in registry:
        register(id=_d.env_id, entry_point=_d.entry_point, kwargs=dict(_d.kwargs),
                 max_episode_steps=_d.max_episode_steps, reward_threshold=_d.reward_threshold)


def check_env_id(env_id: str) -> str:
    """Returns ``env_id`` if gymnasium knows it; ValueError with close matches otherwise."""
    if not isinstance(env_id, str) or env_id not in registry:
        close = difflib.get_close_matches(str(env_id), list(registry), n=3, cutoff=0.5)
        raise ValueError(f"unknown environment id {env_id!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                  else f"; vlmreward ids: {', '.join(ENV_IDS)}"))
    return env_id


def declaration(env_id: str) -> EnvDeclaration:
    """The declaration of a vlmreward id; ValueError for an unknown or non-vlmreward id."""
    check_env_id(env_id)
    if env_id not in DECLARATIONS:
        raise ValueError(f"{env_id!r} is not a vlmreward environment; vlmreward ids: {', '.join(ENV_IDS)}")
    return DECLARATIONS[env_id]


def family(env_id: str) -> str:
    """The name results are reported under: the declared family of a vlmreward id ("vlmreward/Find-v0" ->
    "Find"); for any other name, its last path part without the version ("CartPole-v1" -> "CartPole",
    "Lift" -> "Lift"), so user-given names and datasets read the same way."""
    name = str(env_id).strip()
    return DECLARATIONS[name].family if name in DECLARATIONS else name.split("/")[-1].split("-v")[0]


def task_sets(env_ids, exclude=()) -> list[str]:
    """The goals of the task sets of ``env_ids`` (registered ids with language goals), in order, duplicates and
    the strings of ``exclude`` left out: extra negatives for another environment's goal bank (e.g. Find's goals
    describe the Lift frames where nothing is carried). Raises ValueError for an unknown id or an environment
    without a ``task_set``."""
    import gymnasium as gym

    out, skip = [], set(exclude)
    for env_id in env_ids:
        probe = gym.make(check_env_id(env_id))
        strings = getattr(probe.unwrapped, "task_set", None)
        probe.close()
        if strings is None:
            raise ValueError(f"{env_id} has no language goals (no task_set) to take negatives from")
        out += [s for s in strings if s not in skip]
    return list(dict.fromkeys(out))


def reward_style(env) -> str:
    """Declared reward style of an environment instance, an id, or a gymnasium env (goal-reaching by default)."""
    if isinstance(env, str):
        return DECLARATIONS[env].reward_style if env in DECLARATIONS else GOAL_REACHING
    base = env.unwrapped if hasattr(env, "unwrapped") else env
    style = getattr(base, "reward_style", GOAL_REACHING)
    if style not in REWARD_STYLES:
        raise ValueError(f"{type(base).__name__}.reward_style must be one of {REWARD_STYLES}, got {style!r}")
    return style


def ends_on_success(env) -> bool:
    """True for goal-reaching environments: the default of ``terminate_on_success`` everywhere."""
    return reward_style(env) == GOAL_REACHING


__all__ = ["DECLARATIONS", "ENV_IDS", "GOAL_REACHING", "HELDOUT_PAIRS", "PER_STEP", "CartPoleUpright",
           "EnvDeclaration", "HouseholdEnv", "MountainCarFlag", "check_env_id", "declaration",
           "ends_on_success", "expert_action", "family", "reward_style", "task_sets"]
