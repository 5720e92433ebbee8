"""Adapters from vlmreward's gymnasium wrappers to other RL libraries (docs/integrations.md).

- :mod:`vlmreward.integrations.sb3`: stable-baselines3 (``pip install "vlmreward[sb3]"``): ``SB3VecEnv``, a
  stable-baselines3 ``VecEnv`` over a gymnasium vector env (e.g. ``VectorVLMRewardWrapper``), and
  ``GroundTruthCallback``, which logs the ground truth next to the VLM return.

Each submodule imports its library; this package imports none of them.
"""
