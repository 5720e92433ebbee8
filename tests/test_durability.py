"""Files the trainer reads never run code; runs killed at any moment resume with every logged step kept once."""
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import vlmreward
from vlmreward import cli, fileio
from vlmreward.rl import ppo, runlog, video
from vlmreward.rl.checkpoint import load_checkpoint

PACKAGE_ROOT = Path(vlmreward.__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), SDL_VIDEODRIVER="dummy", SDL_AUDIODRIVER="dummy")
TRAIN = ["--env-id", "CartPole-v1", "--reward", "gt", "--num-envs", "4", "--num-steps", "128",
         "--checkpoint-interval", "1", "--eval-interval", "0", "--eval-episodes", "2", "--no-progress"]
ITERATIONS = 24
TOTAL = ITERATIONS * 4 * 128


class _Payload:
    """Unpickling this object creates a file: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_checkpoint_with_code_never_runs(tmp_path, capsys):
    run, marker = tmp_path / "run", tmp_path / "pwned"
    run.mkdir()
    torch.save({"agent": {}, "optimizer": {}, "iteration": 1, "global_step": 1, "meta": _Payload(marker)},
               run / "checkpoint.pt")
    with pytest.raises(ValueError, match="checkpoint.pt"):
        ppo.train(ppo.Args(env_id="CartPole-v1", reward="gt", resume=str(run), progress=False))
    with pytest.raises(ValueError, match="checkpoint.pt"):
        video.record(run, tmp_path / "a.gif")
    assert cli.main(["enjoy", str(run)]) == 2
    assert cli.main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "Traceback" not in err
    assert not marker.exists()  # the payload never ran


def _train_cmd(run, *extra):
    return [sys.executable, "-m", "vlmreward.cli", "train", *TRAIN, "--total-timesteps", str(TOTAL),
            "--run-dir", str(run), *extra]


def _kill_during_checkpoint_write(run, marker):
    """A run whose 3rd checkpoint write stalls half-way (a torn temporary on disk) until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time, torch
        save, calls = torch.save, []
        def stalling_save(obj, path, *a, **k):
            calls.append(path)
            if len(calls) == 3:
                open(path, "wb").write(b"torn")
                open({str(marker)!r}, "w").close()
                time.sleep(120)
            return save(obj, path, *a, **k)
        torch.save = stalling_save
        from vlmreward.cli import main
        sys.exit(main({_train_cmd(run)[3:]!r}))
    """)
    return [sys.executable, "-c", code]


def _run_until_killed(argv, cwd, ready, delay):
    proc = subprocess.Popen(argv, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 120
        while not ready() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(delay)
        assert proc.poll() is None, f"the run ended before it was killed (exit status {proc.returncode})"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


@pytest.mark.slow
def test_kills_at_random_moments_lose_no_logged_step(tmp_path):
    """Six kills (one in the middle of a checkpoint write, the others at random moments after a checkpoint),
    each followed by --resume: the final metrics.csv holds exactly the (step, tag) rows of an uninterrupted run,
    with identical values up to the first kill, and no temporary file is left."""
    ref = tmp_path / "ref"
    out = subprocess.run(_train_cmd(ref), env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    run, marker = tmp_path / "run", tmp_path / "stalled"
    _run_until_killed(_kill_during_checkpoint_write(run, marker), tmp_path, marker.exists, 0.0)
    assert list(run.glob(".checkpoint.pt.tmp-*")), "the kill must leave a torn temporary"
    first = load_checkpoint(run)  # the previous checkpoint, intact
    assert first["iteration"] == 2
    rng = random.Random(0)
    for kill in range(5):
        before = load_checkpoint(run)["iteration"]

        def advanced():
            try:
                return load_checkpoint(run)["iteration"] > before
            except (ValueError, FileNotFoundError):
                return False
        _run_until_killed(_train_cmd(tmp_path / "unused", "--resume", str(run)), tmp_path, advanced,
                          rng.uniform(0.0, 0.4))
    out = subprocess.run(_train_cmd(tmp_path / "unused", "--resume", str(run)), env=ENV, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not list(run.glob(".*.tmp-*"))
    final = load_checkpoint(run)
    assert final["iteration"] == ITERATIONS and final["global_step"] == TOTAL
    rows, ref_rows = runlog.read_rows(run / "metrics.csv"), runlog.read_rows(ref / "metrics.csv")
    def per_iteration(rows):  # one row per iteration and tag (episode rows depend on the episodes played)
        return [(s, t) for s, t, _ in rows if not t.startswith(("charts/episodic", "charts/gt"))]
    assert sorted(per_iteration(rows)) == sorted(per_iteration(ref_rows))  # none lost, none counted twice
    assert len(per_iteration(rows)) == len(set(per_iteration(rows)))
    assert {t for _, t, _ in rows} == {t for _, t, _ in ref_rows}
    upto = first["global_step"]
    def upto_first_kill(rows):  # what the killed run logged before its first kill (timings aside)
        return [(s, t, v) for s, t, v in rows if s <= upto and not t.startswith("perf/")]
    assert len(upto_first_kill(rows)) > 50 and upto_first_kill(rows) == upto_first_kill(ref_rows)
    results = json.loads((run / "results.json").read_text())
    assert results["eval"]["train"]["episodes"] == 2


def test_resuming_a_finished_run_keeps_its_results(tmp_path):
    run = tmp_path / "run"
    args = ppo.Args(env_id="CartPole-v1", reward="gt", num_envs=2, num_steps=32, total_timesteps=256,
                    eval_episodes=2, progress=False, run_dir=str(run))
    first = ppo.train(args)
    saved = json.loads((run / "results.json").read_text())
    rows = runlog.read_rows(run / "metrics.csv")
    assert saved["eval"]["train"]["episodes"] == 2
    again = ppo.train(ppo.Args(env_id="CartPole-v1", reward="gt", total_timesteps=256, resume=str(run),
                               progress=False))
    now = json.loads((run / "results.json").read_text())
    assert again["eval"]["train"] == first["eval"]["train"] == now["eval"]["train"]
    assert now["global_step"] == saved["global_step"] and runlog.read_rows(run / "metrics.csv") == rows


def test_failed_start_leaves_an_existing_run_untouched(tmp_path):
    run = tmp_path / "run"
    ppo.train(ppo.Args(env_id="CartPole-v1", reward="gt", num_envs=2, num_steps=32, total_timesteps=128,
                       eval_episodes=1, progress=False, run_dir=str(run)))
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="unknown model"):  # fails while setting up: nothing is written
        ppo.train(ppo.Args(env_id="vlmreward/Find-v0", reward="vlm", model="no-such-model", run_dir=str(run)))
    with pytest.raises(ValueError, match="already holds a run"):  # a fresh run never replaces another run
        ppo.train(ppo.Args(env_id="CartPole-v1", reward="gt", run_dir=str(run), progress=False))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files


def test_atomic_writes_leave_old_or_new_file(tmp_path):
    target = tmp_path / "a.json"
    fileio.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1} and not list(tmp_path.glob(".a.json.tmp-*"))
    (tmp_path / ".a.json.tmp-999-0").write_text("left by a killed process")
    assert [p.name for p in fileio.remove_temporaries(tmp_path)] == [".a.json.tmp-999-0"]
    with pytest.raises(ValueError, match="b.pt"):
        (tmp_path / "b.pt").write_bytes(b"\x80\x04garbage")
        fileio.torch_load(tmp_path / "b.pt")
