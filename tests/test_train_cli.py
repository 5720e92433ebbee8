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
    (["--view", "fisheye"], "view must be one of"),
    (["--frame-source", "camera"], "frame_source must be one of"),
    (["--depth", "-1"], "depth"),
    (["--goal-noise", "-0.1"], "goal_noise must be >= 0"),
    (["--goal-noise", "nan"], "goal_noise must be >= 0"),
    (["--scorer", "slots"], "scorer must be one of"),
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


def _cli_error(capsys, argv):
    """(exit status, stderr) of the CLI; argparse errors exit through SystemExit."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, needle", [
    (["train", "--num-env", "4"], "--num-env"),  # abbreviations are off: not --num-envs
    (["train", "--res", "x"], "--res"),  # ... nor --resume
    (["train", "--num-envs", "four"], "invalid int value"),
    (["train", "--env-id", "vlmreward/Fnd-v0", "--reward", "gt"], "unknown environment id"),
    (["train", "--config", "no-such-config"], "config file not found"),
    (["enjoy", "missing-run/checkpoint.pt"], "checkpoint not found"),
    (["evaluate-agent", "missing-run"], "checkpoint not found"),
    (["evaluate-agent", "missing-run", "--max-attempts", "once"], "integer >= 1 or 'none'"),
    (["train", "--env-id", "vlmreward/Lift-v0", "--max-attempts", "0"], "max_attempts must be None or >= 1"),
    (["pretrain", "--epoch", "2"], "--epoch"),
    (["pretrain", "--precision", "fp8"], "precision"),
])
def test_user_errors_print_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, needle):
    monkeypatch.chdir(tmp_path)
    code, err = _cli_error(capsys, argv)
    assert code == 2, err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()  # a failed start writes nothing


@pytest.mark.parametrize("text, needle", [
    ("num_envs: null\n", "must be int, got null"),
    ("num_envs: true\n", "must be int, got True"),
    ("learning_rate: [1, 2]\n", "must be float"),
    ("threshold: high\n", "must be float"),
    ("templates: a photo of {}\n", "list of strings"),
    ("num_envs: 3.5\n", "integer"),
    ("num_objects: [2, three]\n", "num_objects' item must be int"),
    ("num_objects: 3\n", "list of integers"),
    ("env_id: [\n", "not valid YAML"),
])
def test_bad_yaml_values_exit_2(capsys, tmp_path, monkeypatch, text, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    code, err = _cli_error(capsys, ["train", "--config", "bad.yaml"])
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="unknown environment id"):
        cli.main(["train", "--debug", "--env-id", "Nope-v0", "--reward", "gt"])
    monkeypatch.setenv("VLMREWARD_DEBUG", "1")
    with pytest.raises(ValueError, match="unknown environment id"):
        cli.main(["train", "--env-id", "Nope-v0", "--reward", "gt"])


def test_train_and_pretrain_share_one_config_front_end(tmp_path):
    """Both commands' flags come from vlmreward.config: every field a flag with its help text, YAML + flag
    precedence and type checks alike (the pretrain generator used to raise KeyError on list/optional types)."""
    from vlmreward import config
    from vlmreward.pretrain import train as pretrain
    for cls, module in ((ppo.Args, ppo), (pretrain.PretrainConfig, pretrain)):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        actions = {a.dest: a for a in parser._actions}
        for f in dataclasses.fields(cls):
            assert f.name in actions and f.metadata["help"] in actions[f.name].help, f.name
    (tmp_path / "p.yaml").write_text("epochs: 3\nsteps_per_epoch: 1e2\nprogress: false\nlr: 1\n")
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    cfg = config.from_namespace(pretrain.PretrainConfig,
                                parser.parse_args(["--config", str(tmp_path / "p.yaml"), "--epochs", "5"]))
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.progress, cfg.lr) == (5, 100, False, 1.0)
    assert isinstance(cfg.lr, float) and cfg.model == pretrain.PretrainConfig().model
    (tmp_path / "q.yaml").write_text("epochs: true\n")
    with pytest.raises(TypeError, match="epochs"):
        config.from_namespace(pretrain.PretrainConfig, parser.parse_args(["--config", str(tmp_path / "q.yaml")]))
