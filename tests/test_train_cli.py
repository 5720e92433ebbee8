"""`vlmreward train` / `vlmreward enjoy` command line: flags from the Args dataclass, YAML configs, clear errors."""
import argparse
import dataclasses

import pytest

from vlmreward import cli
from vlmreward.rl import ppo, video


def _namespace(argv):
    parser = argparse.ArgumentParser()
    ppo.add_arguments(parser)
    return parser.parse_args(argv)


def test_every_args_field_has_a_flag():
    parser = argparse.ArgumentParser()
    ppo.add_arguments(parser)
    flags = {o for a in parser._actions for o in a.option_strings}
    for f in dataclasses.fields(ppo.Args):
        assert "--" + f.name.replace("_", "-") in flags, f.name


def test_flags_parse_to_typed_args():
    ns = _namespace(["--env-id", "CartPole-v1", "--reward", "gt", "--num-envs", "3", "--learning-rate", "1e-3",
                     "--no-anneal-lr", "--train-goals", "go to the red ball", "go to the blue key",
                     "--target-kl", "0.02"])
    args = ppo.parse_args(ns)
    assert (args.env_id, args.reward, args.num_envs, args.learning_rate) == ("CartPole-v1", "gt", 3, 1e-3)
    assert args.anneal_lr is False and args.target_kl == 0.02
    assert args.train_goals == ["go to the red ball", "go to the blue key"]
    assert args.gamma == ppo.Args().gamma  # untouched fields keep the dataclass defaults


def test_yaml_config_and_flag_precedence(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("env-id: CartPole-v1\nreward: gt\nnum_envs: 2\ntotal_timesteps: 1e4\nanneal_lr: false\n"
                   "templates: ['a photo of {}']\n")
    args = ppo.parse_args(_namespace(["--config", str(cfg), "--num-envs", "5"]))
    assert args.env_id == "CartPole-v1" and args.reward == "gt"
    assert args.num_envs == 5  # the flag wins over the file
    assert args.total_timesteps == 10_000 and isinstance(args.total_timesteps, int)
    assert args.anneal_lr is False and args.templates == ["a photo of {}"]


def test_shipped_configs_parse(tmp_path, monkeypatch):
    from vlmreward.config import shipped_configs
    names = shipped_configs()
    assert {"cartpole", "find"} <= set(names), names  # package data: installed with the package
    monkeypatch.chdir(tmp_path)  # by name, from outside the checkout
    for name in names:
        args = ppo.parse_args(_namespace(["--config", name]))
        assert args.env_id.startswith("vlmreward/"), name


@pytest.mark.parametrize("text, error, match", [
    ("num_env: 3\n", ValueError, "num_envs"),  # typo: suggestion named
    ("num_envs: three\n", TypeError, "num_envs"),
    ("anneal_lr: 1\n", TypeError, "anneal_lr"),
    ("- a\n- b\n", ValueError, "mapping"),
])
def test_bad_yaml_config(tmp_path, text, error, match):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(error, match=match):
        ppo.parse_args(_namespace(["--config", str(cfg)]))


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config"):
        ppo.parse_args(_namespace(["--config", str(tmp_path / "nope.yaml")]))


@pytest.mark.parametrize("argv, match", [
    (["--reward", "shaped"], "reward"),
    (["--num-envs", "0"], "num_envs"),
    (["--threshold", "1.5"], "threshold"),
    (["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"], "divisible"),
])
def test_bad_values(argv, match):
    with pytest.raises(ValueError, match=match):
        ppo.parse_args(_namespace(argv))


def test_unknown_env_id(tmp_path):
    with pytest.raises(ValueError, match="unknown environment id 'vlmreward/Fnd-v0'.*Find-v0"):
        ppo.train(ppo.Args(env_id="vlmreward/Fnd-v0", reward="gt", run_dir=str(tmp_path)))


def test_goal_outside_task_set(tmp_path, tiny_clip_dir):
    with pytest.raises(ValueError, match="not in the task set.*go to the red ball"):
        ppo.train(ppo.Args(reward="gt", model=str(tiny_clip_dir), run_dir=str(tmp_path),
                           train_goals=["go to the red bal"]))


def test_vlm_reward_needs_language_goals(tmp_path):
    with pytest.raises(ValueError, match="no language goals"):
        ppo.train(ppo.Args(env_id="CartPole-v1", reward="vlm", run_dir=str(tmp_path)))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ppo.train(ppo.Args(env_id="CartPole-v1", reward="gt", resume=str(tmp_path / "nothing")))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        cli.main(["--debug", "enjoy", str(tmp_path / "missing.pt")])


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        video.record(bad)
