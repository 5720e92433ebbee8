"""vlmreward: vision-language models (CLIP family) as reward functions for reinforcement learning.

Implements Baumli et al., "Vision-Language Models as a Source of Rewards" (arXiv 2312.09187).
"""
from vlmreward.ops import (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, RewardOutput, fused_reward, preprocess,
                           reward_head)

__version__ = "0.1.0"
__all__ = ["OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD", "RewardOutput", "fused_reward", "preprocess", "reward_head"]
