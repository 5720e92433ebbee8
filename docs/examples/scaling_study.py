"""The paper's scaling study end to end (Baumli et al. 2023, section 4.3): reward-model size -> reward accuracy ->
agent success, every model trained on the same data with the same schedule, every agent with the same budget.

Stages, each a ``vlmreward`` command whose output is kept, so a rerun skips what is done and resumes what was cut:

1. ``vlmreward pretrain`` of each ConvMixer size (``VLMR-ConvMixer-{w}-{d}-84-MiniLM``; the default recipe, its
   data generated once). The 256-4 model of this recipe is the shipped default model: reused unless
   ``--retrain-default``.
2. ``vlmreward evaluate`` on the test seeds: average precision on training goals, held-out goals and the
   evaluation-only wordings, with each family's reward bank as the agents use it (Find: its task set; Lift:
   its task set + Find's, ``--negatives-from``), precision / recall at the agents' beta; PickPlace too (reward
   only: no agent reaches it yet, docs/results/training.md).
3. ``vlmreward train --config find|lift --model <size>`` with ``--total-timesteps`` steps, per seed; the final
   evaluation runs ``--eval-episodes`` ground-truth episodes per split.
4. ``scaling.json``, ``scaling.md`` (table) and ``scaling.png`` (AP vs size, success vs size, seeds shown).

    python docs/examples/scaling_study.py --out runs/scaling --jobs 2

One job per core (each command uses one torch thread). Logs: ``<out>/logs/<stage>.log``.
"""
from __future__ import annotations

import argparse
import datetime
import fcntl
import functools
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlmreward import fileio

SIZES = ("32-2", "64-2", "128-3", "256-4")
DEFAULT_SIZE = "256-4"  # the shipped default model is this recipe at this size (vlmreward/assets/default)
# family: (agent config or None: reward AP only, beta of that config, negatives_from of that config)
FAMILIES = {"Find": ("find", 0.5, ()), "Lift": ("lift", 0.3, ("vlmreward/Find-v0",)),
            "PickPlace": (None, 0.02, ())}


@dataclass
class Stage:
    name: str
    cmd: list[str]
    done: Path  # exists when the stage has finished
    deps: list[str] = field(default_factory=list)
    checkpoint: Path | None = None  # when it exists at launch, ``resume`` is appended to ``cmd``
    resume: list[str] = field(default_factory=list)


def model_name(size: str) -> str:
    return f"VLMR-ConvMixer-{size}-84-MiniLM"


def model_dir(a, size: str) -> Path | None:
    """The hub directory of the size's model: None for the shipped default (``vlmreward/assets/default``)."""
    return None if size == DEFAULT_SIZE and not a.retrain_default else Path(a.out) / f"model_{size.replace('-', '_')}"


@functools.lru_cache
def params(size: str) -> int:
    """Parameters of the size's image tower (the text tower, frozen MiniLM + projection, is the same in all)."""
    from vlmreward.models import build_model
    return sum(p.numel() for p in build_model(model_name(size)).visual.parameters())


def stages(a) -> list[Stage]:
    """Pretraining first, then evaluations, then agents (the order in which ``run_all`` starts them)."""
    out, cli = Path(a.out), [sys.executable, "-m", "vlmreward.cli"]
    pretrain, evaluate, agents = [], [], []
    for size in a.sizes:
        tag = size.replace("-", "_")
        hub = model_dir(a, size)
        model, deps = ("default", []) if hub is None else (str(hub), [f"pretrain_{tag}"])
        if hub is not None:
            pt = out / f"pretrain_{tag}"
            pretrain.append(Stage(f"pretrain_{tag}", cli + [
                "pretrain", "--model", model_name(size), "--out", str(pt), "--data-dir", a.data_dir,
                "--export", model, "--threads", "1", "--no-progress"], hub / "RECIPE.json",
                checkpoint=pt / "checkpoint.pt", resume=["--resume"]))
        for fam, (config, beta, neg_from) in FAMILIES.items():
            ev = out / f"eval_{fam.lower()}_{tag}"
            evaluate.append(Stage(f"eval_{fam.lower()}_{tag}", cli + [
                "evaluate", "--model", model, "--env", f"vlmreward/{fam}-v0", "--threshold", str(beta),
                "--out", str(ev), "--data-dir", a.eval_data_dir, "--no-progress"]
                + (["--negatives-from", *neg_from] if neg_from else []), ev / "evaluation.json", deps))
            for seed in a.seeds if config else ():
                run = out / f"agent_{fam.lower()}_{tag}_s{seed}"
                agents.append(Stage(f"agent_{fam.lower()}_{tag}_s{seed}", cli + [
                    "train", "--config", config, "--model", model, "--seed", str(seed),
                    "--total-timesteps", str(a.total_timesteps), "--eval-episodes", str(a.eval_episodes),
                    "--eval-interval", "0", "--run-dir", str(run), "--threads", "1", "--no-progress"],
                    run / "results.json", deps, checkpoint=run / "checkpoint.pt", resume=["--resume", str(run)]))
    return pretrain + evaluate + agents


def run_all(todo: list[Stage], jobs: int, logs: Path) -> list[str]:
    """Runs the stages ``jobs`` at a time in list order once their dependencies are done; returns failed names.

    A running stage holds an exclusive lock on its log (inherited by the command), so a second invocation of
    this script waits for it instead of running it twice.
    """
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, done, failed = list(todo), {}, set(), []
    while pending or running:
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                (done.add if proc.returncode == 0 else failed.append)(name)
                print(f"{time.strftime('%H:%M:%S')} {name}: {'done' if proc.returncode == 0 else 'FAILED'}",
                      flush=True)
        for s in list(pending):
            if s.done.exists():
                pending.remove(s)
                done.add(s.name)
            elif any(d in failed for d in s.deps):
                pending.remove(s)
                failed.append(s.name)
            elif len(running) < jobs and all(d in done for d in s.deps):
                log = open(logs / f"{s.name}.log", "a")
                try:
                    fcntl.flock(log, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # another invocation runs it
                    log.close()
                    continue
                pending.remove(s)
                # decided at launch: an earlier invocation may have been cut in this stage since the list was made
                cmd = s.cmd + (s.resume if s.checkpoint is not None and s.checkpoint.is_file() else [])
                print(f"{time.strftime('%H:%M:%S')} {s.name}: {' '.join(cmd[3:])}", flush=True)
                running[s.name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                    env={**os.environ, "OMP_NUM_THREADS": "1"}), log)
        time.sleep(5)
    return failed


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def collect(a) -> dict:
    import vlmreward
    out, rows = Path(a.out), []
    for size in a.sizes:
        tag = size.replace("-", "_")
        for fam, (_, beta, neg_from) in FAMILIES.items():
            ev_path = out / f"eval_{fam.lower()}_{tag}" / "evaluation.json"
            if not ev_path.is_file():  # --report-only before the study is finished: that point is left out
                continue
            ev = json.loads(ev_path.read_text())
            res = ev["results"][f"vlmreward/{fam}-v0"]
            wordings = [v["average_precision"] for k, v in res.items() if k.startswith("eval:")]
            agents = {}
            for seed in a.seeds:
                r_path = out / f"agent_{fam.lower()}_{tag}_s{seed}" / "results.json"
                if not r_path.is_file():
                    continue
                r = json.loads(r_path.read_text())
                agents[seed] = {"train": r["eval"]["train"]["success"], "heldout": r["eval"]["heldout"]["success"],
                                "steps_per_second": r["steps_per_second"]}
            hub = model_dir(a, size) or Path(vlmreward.__file__).parent / "assets" / "default"
            history = json.loads((hub / "RECIPE.json").read_text())["history"]
            rows.append({"size": size, "vision_params": params(size), "family": fam, "beta": beta,
                         "pretrain_minutes": sum(h["seconds"] for h in history) / 60,
                         "negatives_from": list(neg_from),
                         "ap_train": res["train"]["average_precision"],
                         "ap_heldout": res["heldout"]["average_precision"],
                         "ap_wordings_mean": sum(wordings) / len(wordings),
                         "precision": res["train"]["precision"], "recall": res["train"]["recall"],
                         "agents": agents})
    return {"date": datetime.date.today().isoformat(), "machine": cpu_name(),
            "cpus": os.cpu_count(), "total_timesteps": a.total_timesteps, "eval_episodes": a.eval_episodes,
            "seeds": list(a.seeds), "rows": rows}


def report(study: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lines = ["| family | image tower | params | pretraining (min, 1 thread) | AP train | AP held-out "
             "| AP wordings (mean) | precision / recall at beta | success train (seeds) | success held-out (seeds) |",
             "|" + "---|" * 10]
    for r in study["rows"]:
        tr = [v["train"] for v in r["agents"].values()] or [float("nan")]
        ho = [v["heldout"] for v in r["agents"].values()] or [float("nan")]
        lines.append(f"| {r['family']} | ConvMixer-{r['size']} | {r['vision_params'] / 1e3:.0f}k "
                     f"| {r['pretrain_minutes']:.0f} | {r['ap_train']:.3f} | {r['ap_heldout']:.3f} "
                     f"| {r['ap_wordings_mean']:.3f} | {r['precision']:.2f} / {r['recall']:.2f} at {r['beta']} "
                     f"| {sum(tr) / len(tr):.3f} ({', '.join(f'{x:.3f}' for x in tr)}) "
                     f"| {sum(ho) / len(ho):.3f} ({', '.join(f'{x:.3f}' for x in ho)}) |")
    fileio.write_text(out / "scaling.md", "\n".join(lines).replace("nan (nan)", "no agents") + "\n")
    fig, (ax_ap, ax_sr) = plt.subplots(1, 2, figsize=(11, 4.2))
    for fam, color in zip(FAMILIES, ("tab:blue", "tab:orange", "tab:green")):
        rows = [r for r in study["rows"] if r["family"] == fam]
        x = [r["vision_params"] for r in rows]
        ax_ap.plot(x, [r["ap_train"] for r in rows], "o-", color=color, label=f"{fam} training goals")
        ax_ap.plot(x, [r["ap_heldout"] for r in rows], "s--", color=color, label=f"{fam} held-out goals")
        ax_ap.plot(x, [r["ap_wordings_mean"] for r in rows], "^:", color=color, label=f"{fam} evaluation wordings")
        for split, marker, ls in (("train", "o", "-"), ("heldout", "s", "--")) if FAMILIES[fam][0] else ():
            ys = [[v[split] for v in r["agents"].values()] or [float("nan")] for r in rows]
            ax_sr.plot(x, [sum(y) / len(y) for y in ys], ls, color=color, marker=marker,
                       label=f"{fam} {'training' if split == 'train' else 'held-out'} goals")
            for xi, y in zip(x, ys):
                ax_sr.scatter([xi] * len(y), y, color=color, marker=marker, alpha=0.35, s=14)
    sizes = {r["vision_params"]: r["size"] for r in study["rows"]}
    ticks = sorted(sizes)
    labels = [f"{sizes[t]}\n{t / 1e3:.0f}k" for t in ticks]
    ax_ap.legend(fontsize=7, loc="lower right")
    for ax, title in ((ax_ap, "reward: test average precision"),
                      (ax_sr, f"agent: ground-truth success ({study['total_timesteps'] // 1000}k steps, "
                              f"{study['eval_episodes']} episodes)")):
        ax.set_xscale("log")
        ax.set_xticks(ticks, labels, minor=False)
        ax.minorticks_off()
        ax.set_xlabel("image tower (ConvMixer width-depth, parameters)")
        ax.set_ylim(0, 1.02)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    ax_sr.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fileio.write_with(out / "scaling.png", lambda tmp: fig.savefig(tmp, dpi=110, format="png"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/scaling")
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    p.add_argument("--total-timesteps", type=int, default=160_000)
    p.add_argument("--eval-episodes", type=int, default=200)
    p.add_argument("--jobs", type=int, default=2, help="commands at once (each one torch thread)")
    p.add_argument("--data-dir", default="data/pretrain", help="pretraining data cache (generated once)")
    p.add_argument("--eval-data-dir", default="data/evaluate", help="test data cache")
    p.add_argument("--retrain-default", action="store_true", help="pretrain the 256-4 model too")
    p.add_argument("--report-only", action="store_true", help="only collect finished stages into the report")
    a = p.parse_args(argv)
    out = Path(a.out)
    if not a.report_only:
        todo = stages(a)
        failed = run_all(todo, a.jobs, out / "logs")
        if failed:
            print(f"failed: {', '.join(failed)} (logs in {out / 'logs'})", file=sys.stderr)
            return 1
    study = collect(a)
    fileio.write_json(out / "scaling.json", study, indent=1)
    report(study, out)
    print((out / "scaling.md").read_text())
    print(f"wrote {out / 'scaling.json'}, scaling.md, scaling.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
