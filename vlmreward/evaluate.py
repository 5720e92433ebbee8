"""``vlmreward evaluate``: offline evaluation of a VLM reward as a classifier of ground-truth success.

Baumli et al. (arXiv 2312.09187, section 4.2) judge a reward model offline by precision-recall curves of the
binary reward ``1[p(goal | frame) > beta]`` (eq. 1-2) against ground truth, sweeping beta. Here, for any model
(``"default"``, an open_clip name + pretrained tag, a local file or directory) and any registered
environment, a labelled held-out set is rolled out on the TEST seeds (disjoint from the training and
validation seeds of ``vlmreward pretrain``), every frame labelled with the success of every goal. Per goal
family (environment) and goal group -- training goals, held-out goals, paraphrased training goals (wordings
never used in training) -- it reports average precision, ROC-AUC, the beta of best F1 and the confusion
counts at a chosen beta (numbers from :mod:`vlmreward.metrics`, i.e. scikit-learn).

Outputs in ``out``: ``evaluation.json`` (all numbers), ``evaluation.md`` (table), ``pr_curves.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

GROUPS = ("train", "heldout", "paraphrase")


def _frames_recipe(vlm, scale: float):
    from vlmreward.pretrain.dataset import default_recipe
    cfg = vlm.preprocess_cfg
    return dataclasses.replace(default_recipe("test", int(cfg["image_size"]), scale),
                               resize_mode=cfg.get("resize_mode", "shortest"),
                               interpolation=cfg.get("interpolation", "bicubic"))


@torch.inference_mode()
def _probs(vlm, frames: np.ndarray, goals, task_set, num_negatives, templates, seed, batch=256) -> np.ndarray:
    """p(goal | frame) of eq. 1 for every frame and goal: (B, G) float64."""
    from vlmreward.goals import GoalBank
    from vlmreward.reward import RewardModel
    bank = GoalBank(vlm, goals, templates=templates, negatives=task_set, num_negatives=num_negatives, seed=seed)
    rm = RewardModel(vlm, bank, mode="probability")
    return np.concatenate([rm(frames[i:i + batch]).probs.double().cpu().numpy()
                           for i in range(0, len(frames), batch)])


def evaluate(model: str = "default", env_ids=None, *, pretrained: str | None = None, num_negatives: int = 8,
             threshold: float | None = None, templates=("{}",), seed: int = 0, scale: float = 1.0,
             out: str | Path | None = None, data_dir: str | Path = "data/evaluate", device: str = "cpu",
             progress: bool = True, return_scores: bool = False) -> dict:
    """Evaluate a reward model offline on the held-out (test-seed) frames of ``env_ids``.

    Args:
        model, pretrained: passed to :func:`vlmreward.load_model` ("default", open_clip name + tag, a path).
        env_ids: registered ids (str or list); None = all five.
        num_negatives: N, negatives per goal sampled from the environment's task set (capped at its size-1).
        threshold: beta for the confusion counts; None uses each group's best-F1 beta.
        templates: prompt templates of the goal bank; seed: seed of the negatives' sampling.
        scale: multiplies the test recipe's episode counts.
        out: directory for evaluation.json / evaluation.md / pr_curves.png (None: no files).
        return_scores: also return the raw (probs, labels) arrays under "scores" (not written to JSON).
    Returns:
        {"model", "identity", "num_negatives", "results": {env: {group: metrics dict}}, "table": markdown}.
        A metrics dict is :func:`vlmreward.metrics.classification_metrics` plus "num_negatives", "goals",
        "pr_curve" ({"precision", "recall"}); a group without both classes holds {"error": reason}.
    Raises:
        ValueError: unknown environment id, bad num_negatives/threshold; errors of ``load_model``.
    """
    from sklearn.metrics import precision_recall_curve
    from tqdm.auto import tqdm

    import vlmreward.envs as envs
    from vlmreward.metrics import classification_metrics
    from vlmreward.models import load_model
    from vlmreward.pretrain.captions import paraphrase
    from vlmreward.pretrain.dataset import load_or_generate

    env_ids = list(envs.ENV_IDS) if env_ids is None else ([env_ids] if isinstance(env_ids, str) else list(env_ids))
    unknown = [e for e in env_ids if e not in envs.ENV_IDS]
    if unknown or not env_ids:
        raise ValueError(f"unknown environment id(s) {unknown}; choose from {list(envs.ENV_IDS)}")
    if int(num_negatives) < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    vlm = load_model(model, pretrained, device=device)
    recipe = dataclasses.replace(_frames_recipe(vlm, scale), env_ids=tuple(env_ids))
    ds = load_or_generate(recipe, data_dir, progress)
    results, scores = {}, {}
    bar = tqdm(total=len(env_ids) * 2, desc="evaluate", disable=not progress)
    for e, env_id in enumerate(ds.env_ids):
        rows = ds.env_index == e
        cols = np.asarray(ds.env_goals[e])
        task = [ds.goals[c] for c in cols]
        is_train = ds.train_goal_mask[cols]
        labels = ds.labels[rows][:, cols]
        n = min(int(num_negatives), len(task) - 1)
        probs = _probs(vlm, ds.frames[rows], task, task, n, templates, seed)
        bar.update()
        para = [paraphrase(g) for g in task]
        probs_para = _probs(vlm, ds.frames[rows], para, para, n, templates, seed)
        bar.update()
        res, raw = {}, {}
        scores[env_id] = raw
        for group, p, m in (("train", probs, is_train), ("heldout", probs, ~is_train),
                            ("paraphrase", probs_para, is_train)):
            y, s = labels[:, m].ravel(), p[:, m].ravel()
            raw[group] = {"probs": s, "labels": y}
            if not m.any() or y.min() == y.max():
                res[group] = {"error": f"{int(y.sum())} positives of {y.size}: needs both classes",
                              "goals": int(m.sum())}
                continue
            r = classification_metrics(s, y, threshold=threshold)
            prec, rec, _ = precision_recall_curve(y, s)
            r.update(num_negatives=n, goals=int(m.sum()), frames=int(rows.sum()),
                     pr_curve={"precision": prec[::max(1, len(prec) // 200)].tolist(),
                               "recall": rec[::max(1, len(rec) // 200)].tolist()})
            res[group] = r
        results[env_id] = res
    bar.close()
    report = {"model": model if pretrained is None else f"{model}:{pretrained}", "identity": vlm.identity,
              "num_negatives": int(num_negatives), "templates": list(templates), "seed": seed,
              "data_recipe": dataclasses.asdict(recipe), "results": results}
    report["table"] = markdown_table(report)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(report, indent=1, default=list) + "\n")
        (out / "evaluation.md").write_text(report["table"] + "\n")
        plot_pr_curves(report, out / "pr_curves.png")
    if return_scores:
        report["scores"] = scores
    return report


def markdown_table(report: dict) -> str:
    """One row per (environment, goal group): AP, ROC-AUC, best-F1 beta, N, confusion at beta."""
    lines = [f"Model `{report['model']}`; reward p(goal|frame) vs {report['num_negatives']} negatives (capped "
             "by task set); held-out test seeds.", "",
             "| family | goals | N | frames | positives | AP | ROC-AUC | best-F1 beta | beta | precision | recall "
             "| TP | FP | TN | FN |", "|" + "---|" * 15]
    for env_id, res in report["results"].items():
        fam = env_id.split("/")[-1].removesuffix("-v0")
        for group in GROUPS:
            r = res.get(group, {})
            if "error" in r or not r:
                lines.append(f"| {fam} | {group} | | | | n/a ({r.get('error', 'absent')}) |" + " |" * 9)
                continue
            lines.append(f"| {fam} | {group} ({r['goals']}) | {r['num_negatives']} | {r['frames']} | {r['positives']} "
                         f"| {r['average_precision']:.3f} | {r['roc_auc']:.3f} | {r['best_f1_threshold']:.3f} "
                         f"| {r['threshold']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['tp']} | {r['fp']} "
                         f"| {r['tn']} | {r['fn']} |")
    return "\n".join(lines)


def plot_pr_curves(report: dict, path) -> None:
    """PNG: one panel per environment, one precision-recall curve (over beta) per goal group."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    envs = list(report["results"])
    fig, axes = plt.subplots(1, len(envs), figsize=(3.6 * len(envs), 3.4), squeeze=False)
    for ax, env_id in zip(axes[0], envs):
        for group in GROUPS:
            r = report["results"][env_id].get(group, {})
            if "pr_curve" in r:
                ax.plot(r["pr_curve"]["recall"], r["pr_curve"]["precision"],
                        label=f"{group} AP={r['average_precision']:.2f}")
        ax.set(title=env_id.split("/")[-1], xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{report['model']}: reward precision-recall over beta (N={report['num_negatives']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', an open_clip name, or a local path")
    parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag (with an open_clip name)")
    parser.add_argument("--env", nargs="+", default=None, help="environment ids (default: all five)")
    parser.add_argument("--negatives", type=int, default=8, help="negatives per goal from the task set")
    parser.add_argument("--threshold", type=float, default=None, help="beta for confusion (default: best F1)")
    parser.add_argument("--templates", nargs="+", default=["{}"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the test recipe's episodes")
    parser.add_argument("--out", default=None, help="output directory (default runs/evaluate/<model>)")
    parser.add_argument("--data-dir", default="data/evaluate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = args.out or str(Path("runs/evaluate") / Path(str(args.model)).name.replace(":", "_"))
    report = evaluate(args.model, args.env, pretrained=args.pretrained, num_negatives=args.negatives,
                      threshold=args.threshold, templates=tuple(args.templates), seed=args.seed, scale=args.scale,
                      out=out, data_dir=args.data_dir, device=args.device, progress=not args.no_progress)
    print(report["table"])
    print(f"wrote {out}/evaluation.json, evaluation.md, pr_curves.png")
    return 0
