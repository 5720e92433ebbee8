"""Language-goal environments with exact ground-truth success for every goal (see docs/environments.md).

Registered ids (``import vlmreward`` registers them):
    vlmreward/Find-v0, vlmreward/Lift-v0, vlmreward/PickPlace-v0   MiniGrid household objects, frame observations
    vlmreward/CartPoleUpright-v0, vlmreward/MountainCarFlag-v0      classic control, state observations
"""
from gymnasium.envs.registration import register, registry

from vlmreward.envs.classic import CartPoleUpright, MountainCarFlag
from vlmreward.envs.expert import expert_action
from vlmreward.envs.household import HELDOUT_PAIRS, HouseholdEnv

ENV_IDS = ("vlmreward/Find-v0", "vlmreward/Lift-v0", "vlmreward/PickPlace-v0",
           "vlmreward/CartPoleUpright-v0", "vlmreward/MountainCarFlag-v0")

_SPECS = {
    "vlmreward/Find-v0": dict(entry_point="vlmreward.envs.household:HouseholdEnv", kwargs={"family": "find"}),
    "vlmreward/Lift-v0": dict(entry_point="vlmreward.envs.household:HouseholdEnv", kwargs={"family": "lift"}),
    "vlmreward/PickPlace-v0": dict(entry_point="vlmreward.envs.household:HouseholdEnv",
                                   kwargs={"family": "pickplace"}),
    "vlmreward/CartPoleUpright-v0": dict(entry_point="vlmreward.envs.classic:CartPoleUpright",
                                         max_episode_steps=500, reward_threshold=475.0),
    "vlmreward/MountainCarFlag-v0": dict(entry_point="vlmreward.envs.classic:MountainCarFlag",
                                         max_episode_steps=200, reward_threshold=-110.0),
}
for _id, _spec in _SPECS.items():
    if _id not in registry:
        register(id=_id, **_spec)

__all__ = ["ENV_IDS", "HELDOUT_PAIRS", "CartPoleUpright", "HouseholdEnv", "MountainCarFlag", "expert_action"]
