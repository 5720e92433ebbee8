"""Run logging of ``vlmreward train``: TensorBoard + a long-format CSV, the learning-curve PNG, results.json.

Durability: ``metrics.csv`` (rows ``step, tag, value``) is append-only while a run lives and is fsynced
before every checkpoint (:meth:`RunLogger.flush`), so every row up to a checkpoint survives a kill. A resumed
run first rewrites the file atomically with the rows up to its checkpoint's step (dropping what a killed run
logged after it, and a line torn by the kill), then appends: no step is lost or counted twice.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from vlmreward import fileio

METRICS = "metrics.csv"
HEADER = ("step", "tag", "value")


class RunLogger:
    """Scalars to TensorBoard and ``<run_dir>/metrics.csv``; a no-op when ``enabled`` is False (ranks > 0).

    ``resume_step``: the global step of the checkpoint a run resumes from (None: a fresh log)."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None = None):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir), purge_step=None if resume_step is None else resume_step + 1)
        self.csv_path = Path(run_dir) / METRICS
        kept = []
        if resume_step is not None and self.csv_path.exists():
            kept = [r for r in read_rows(self.csv_path) if r[0] <= resume_step]
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(HEADER)
        writer.writerows((s, t, f"{v:.6g}") for s, t, v in kept)
        fileio.write_text(self.csv_path, buf.getvalue())
        self.file = open(self.csv_path, "a", newline="")
        self.csv = csv.writer(self.file)

    def log(self, tag: str, value: float, step: int) -> None:
        if self.enabled:
            self.writer.add_scalar(tag, value, step)
            self.csv.writerow([step, tag, f"{float(value):.6g}"])

    def flush(self) -> None:
        """Everything logged so far reaches the disk (call before writing a checkpoint)."""
        if self.enabled:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.writer.flush()

    def close(self) -> None:
        if self.enabled:
            self.flush()
            self.writer.close()
            self.file.close()


def log_episodes(logger: RunLogger, infos: dict, step: int, recent: dict, *, vlm: bool) -> None:
    """CleanRL's episode charts from ``EpisodeStatistics`` (``info["episode"]``), plus the ground truth."""
    tags = (("episodic_return", "r"), ("episodic_length", "l"), ("gt_return", "gt_r"), ("gt_success", "gt_success"))
    for i in np.flatnonzero(infos.get("_episode", ())):
        episode = {k: float(v[i]) for k, v in infos["episode"].items()}
        for tag, key in tags + ((("vlm_return", "vlm_r"),) if vlm else ()):
            logger.log(f"charts/{tag}", episode[key], step)
        recent["gt_success"].append(episode["gt_success"])
        recent["return"].append(episode["r"])


def log_update(logger: RunLogger, step: int, optimizer, stats: dict, clipfracs: list, b: dict, sps: float) -> None:
    """CleanRL's losses/* and perf/* scalars of one iteration (losses of its last minibatch)."""
    y_pred, y_true = b["values"].cpu().numpy(), b["returns"].cpu().numpy()
    var_y = np.var(y_true)
    logger.log("charts/learning_rate", optimizer.param_groups[0]["lr"], step)
    for key in ("value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "hindsight_bc"):
        if key in stats:
            logger.log(f"losses/{key}", float(stats[key]), step)
    logger.log("losses/clipfrac", float(np.mean(clipfracs)), step)
    logger.log("losses/explained_variance", np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y, step)
    logger.log("perf/steps_per_second", sps, step)


def read_rows(csv_path) -> list[tuple[int, str, float]]:
    """(step, tag, value) rows of a metrics.csv; the header and lines torn by a kill are skipped."""
    rows = []
    with open(csv_path, newline="") as fh:
        for row in csv.reader(fh):
            try:
                if len(row) == 3:
                    rows.append((int(row[0]), row[1], float(row[2])))
            except ValueError:
                continue
    return rows


def read_metrics(csv_path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """metrics.csv -> {tag: (steps, values)} in logging order."""
    series: dict[str, tuple[list, list]] = {}
    for step, tag, value in read_rows(csv_path):
        s, v = series.setdefault(tag, ([], []))
        s.append(step)
        v.append(value)
    return {t: (np.array(s), np.array(v)) for t, (s, v) in series.items()}


def plot_learning_curves(csv_path, png_path, title: str) -> Path:
    """Learning-curve PNG: ground-truth success (training episodes and evaluations) and episodic returns."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(csv_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))

    def smooth(y):  # moving average over ~1/40 of the run's episodes
        k = max(10, len(y) // 40)
        return np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else y

    ax = axes[0]
    if "charts/gt_success" in m:
        s, v = m["charts/gt_success"]
        ax.plot(s[len(s) - len(smooth(v)):], smooth(v), label="training episodes (smoothed)", alpha=0.7)
    for tag, label in (("eval/train_success", "eval: training goals"), ("eval/heldout_success", "eval: held-out goals")):
        if tag in m:
            ax.plot(*m[tag], marker="o", label=label)
    ax.set(xlabel="environment steps", ylabel="ground-truth success", ylim=(-0.02, 1.02), title="success")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    for tag, label in (("charts/episodic_return", "trained reward"), ("charts/vlm_return", "VLM reward"),
                       ("charts/gt_return", "ground-truth reward")):
        if tag in m:
            s, v = m[tag]
            ax.plot(s[len(s) - len(smooth(v)):], smooth(v), label=label)
    ax.set(xlabel="environment steps", ylabel="episode return (smoothed)", title="returns")
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    png_path = Path(png_path)
    fileio.write_with(png_path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return png_path
