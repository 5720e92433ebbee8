"""vlmreward: vision-language models (CLIP family) as reward functions for reinforcement learning.

Implements Baumli et al., "Vision-Language Models as a Source of Rewards" (arXiv 2312.09187), with the
goal-baseline projection reward of Rocamonde et al. (arXiv 2310.12921) as an option.

Importing the package registers the environments (``vlmreward/Find-v0``, ...) with gymnasium.
"""
import importlib

from vlmreward.ops import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, RewardOutput, fused_reward, preprocess,
                           reward_head)

__version__ = "0.1.0"

# Public names defined in submodules, imported on first use so `import vlmreward` stays light.
_LAZY = {
    "load_model": "vlmreward.models",
    "VisionLanguageModel": "vlmreward.models",
    "GoalBank": "vlmreward.goals",
    "RewardModel": "vlmreward.reward",
    "calibrate_threshold": "vlmreward.metrics",
    "classification_metrics": "vlmreward.metrics",
    "VLMRewardWrapper": "vlmreward.wrappers",
    "VectorVLMRewardWrapper": "vlmreward.wrappers",
    "evaluate_reward_model": "vlmreward.evaluation",
}

__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "RewardOutput", "fused_reward", "preprocess", "reward_head",
           *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vlmreward' has no attribute {name!r}")


import vlmreward.envs  # noqa: E402,F401  (registers the environment ids with gymnasium)
