"""docs/examples/scaling_study.py: its commands parse with the real CLI, and its scheduler keeps dependencies,
skips finished stages, propagates failures and never runs a stage that another invocation holds."""
from __future__ import annotations

import argparse
import fcntl
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

from vlmreward.cli import COMMANDS, _Parser

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("scaling_study", REPO / "docs" / "examples" / "scaling_study.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scaling_study"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    del sys.modules["scaling_study"]


def _args(tmp_path, **kw):
    a = dict(out=str(tmp_path), sizes=list(("32-2", "256-4")), seeds=[1, 2], total_timesteps=1000,
             eval_episodes=4, data_dir="d", eval_data_dir="e", retrain_default=False)
    a.update(kw)
    return argparse.Namespace(**a)


def test_stage_commands_parse_with_the_cli(study, tmp_path):
    stages = study.stages(_args(tmp_path))
    names = [s.name for s in stages]
    # 32-2 is pretrained, 256-4 is the shipped default; per size 3 evaluations and 2 families x 2 seeds
    assert names[0] == "pretrain_32_2" and "pretrain_256_4" not in names
    assert len(stages) == 1 + 2 * (3 + 4) and not any(n.startswith("agent_pickplace") for n in names)
    for s in stages:
        command, argv = s.cmd[3], s.cmd[4:]
        parser = _Parser(prog=command)
        importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
        args = parser.parse_args(argv)  # exits (SystemExit) on a flag the CLI does not know
        if command == "train":
            assert args.total_timesteps == 1000 and args.eval_episodes == 4 and args.eval_interval == 0
            assert args.model == ("default" if "256_4" in s.name else str(tmp_path / "model_32_2"))
            assert s.deps == ([] if "256_4" in s.name else ["pretrain_32_2"])
        if s.name == "eval_lift_32_2":
            assert args.negatives_from == ["vlmreward/Find-v0"] and args.threshold == 0.3
    retrain = study.stages(_args(tmp_path, retrain_default=True))
    assert "pretrain_256_4" in [s.name for s in retrain]


def _stage(study, tmp_path, name, code, deps=()):
    done = tmp_path / f"{name}.done"
    cmd = [sys.executable, "-c", f"import pathlib, sys; {code}; pathlib.Path({str(done)!r}).write_text('x')"]
    return study.Stage(name, cmd, done, list(deps))


def test_scheduler_order_skip_failure_and_lock(study, tmp_path, monkeypatch):
    monkeypatch.setattr(study.time, "sleep", lambda s: None)
    order = tmp_path / "order.txt"
    log = f"open({str(order)!r}, 'a').write"
    a = _stage(study, tmp_path, "a", f"{log}('a')")
    b = _stage(study, tmp_path, "b", f"{log}('b')", deps=["a"])
    bad = _stage(study, tmp_path, "bad", "sys.exit(3)")
    after_bad = _stage(study, tmp_path, "after_bad", f"{log}('X')", deps=["bad"])
    finished = _stage(study, tmp_path, "finished", f"{log}('F')")
    finished.done.write_text("already")
    failed = study.run_all([b, a, bad, after_bad, finished], jobs=2, logs=tmp_path / "logs")
    assert order.read_text() == "ab"  # b waited for a; finished and after_bad never ran
    assert sorted(failed) == ["after_bad", "bad"]

    # --resume is decided when the stage starts: its checkpoint appeared after the list was made
    resumed = _stage(study, tmp_path, "resumed", f"{log}('|' + ' '.join(sys.argv[1:]))")
    resumed.checkpoint, resumed.resume = tmp_path / "resumed.ckpt", ["--resume", "here"]
    resumed.checkpoint.write_text("cut by an earlier invocation")
    assert study.run_all([resumed], jobs=1, logs=tmp_path / "logs") == []
    assert order.read_text() == "ab|--resume here"

    # a stage whose log another invocation holds is not started; it counts as done once its output appears
    held = _stage(study, tmp_path, "held", f"{log}('H')")
    with open(tmp_path / "logs" / "held.log", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        calls = []

        def sleep(_):
            calls.append(1)
            if len(calls) == 3:
                held.done.write_text("by the other invocation")
        monkeypatch.setattr(study.time, "sleep", sleep)
        assert study.run_all([held], jobs=1, logs=tmp_path / "logs") == []
    assert "H" not in order.read_text()
    assert study.model_dir(_args(tmp_path), "256-4") is None  # the shipped default
    assert study.model_dir(_args(tmp_path), "32-2") == tmp_path / "model_32_2"
