"""``vlmreward evaluate``: offline evaluation of a VLM reward as a classifier of ground-truth success.

Baumli et al. (arXiv 2312.09187, section 4.2) judge a reward model offline by precision-recall curves of the
binary reward ``1[p(goal | frame) > beta]`` (eq. 1-2) against ground truth, sweeping beta. For any model
(``"default"``, an open_clip name + pretrained tag, a local file or directory) and either

* registered environments: a labelled held-out set rolled out on the TEST seeds (disjoint from the training
  and validation seeds of ``vlmreward pretrain``), every frame labelled with the success of every goal; per
  goal family (environment) and goal group -- training goals, held-out goals, and the training goals in each
  evaluation-only wording of :mod:`vlmreward.envs.language` (groups "eval:0", "eval:1", ...: phrasings never
  used in training); or
* a user's own labelled frames (``data=``, an ``.npz``: see :func:`load_labelled_frames`), one group "goals",

it reports average precision, ROC-AUC, the beta of best F1 and the confusion counts at a chosen beta (numbers
from :mod:`vlmreward.metrics`, i.e. scikit-learn). Probabilities come from :class:`~vlmreward.goals.GoalBank` +
:class:`~vlmreward.reward.RewardModel` (:func:`reward_probs`), the same path as validation during
``vlmreward pretrain`` (:func:`dataset_scores`), so the two numbers agree on the same frames.

Outputs in ``out``: ``evaluation.json`` (all numbers), ``evaluation.md`` (table), ``pr_curves.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import zipfile
from pathlib import Path

import numpy as np
import torch

from vlmreward import fileio
from vlmreward.envs import family

GROUPS = ("train", "heldout")  # then "eval:<k>", one per evaluation-only wording
#: group of a user's own labelled frames (``data=``)
DATA_GROUP = "goals"
DATA_KEYS = ("frames", "goals", "labels", "negatives")


def test_recipe(vlm, env_ids=None, scale: float = 1.0, view: str = ""):
    """The test-seed :class:`~vlmreward.pretrain.dataset.DataConfig` of ``env_ids`` (None: all five), frames
    stored at ``vlm``'s input size, resize mode and interpolation; ``view``: household frames ("" = default)."""
    from vlmreward.pretrain.dataset import default_recipe
    cfg = vlm.preprocess_kwargs
    recipe = dataclasses.replace(default_recipe("test", cfg["image_size"], scale, view), resize_mode=cfg["resize_mode"],
                                 interpolation=cfg["interpolation"])
    return recipe if env_ids is None else dataclasses.replace(recipe, env_ids=tuple(env_ids))


test_recipe.__test__ = False  # not a pytest test


@torch.inference_mode()
def reward_probs(vlm, frames, goals, *, negatives, num_negatives: int | None, templates=("{}",),
                 template_ensembling: str = "normalized_mean", seed: int = 0, batch: int = 256,
                 scorer: str = "auto") -> np.ndarray:
    """p(goal | frame) of eq. 1 for every frame and goal: float64 (N, G), from uint8 ``frames`` (N, H, W, 3),
    through a :class:`GoalBank` (``negatives``, ``num_negatives``, ``templates``, ``seed``) and a probability
    :class:`RewardModel` (``scorer``)."""
    from vlmreward.goals import GoalBank
    from vlmreward.reward import RewardModel
    bank = GoalBank(vlm, goals, templates=templates, negatives=negatives, num_negatives=num_negatives, seed=seed,
                    template_ensembling=template_ensembling)
    rm = RewardModel(vlm, bank, mode="probability", scorer=scorer)
    return np.concatenate([rm(frames[i:i + batch]).probs.double().cpu().numpy()
                           for i in range(0, len(frames), batch)])


def dataset_scores(vlm, ds, *, num_negatives: int | None, templates=("{}",), template_ensembling="normalized_mean",
                   seed: int = 0, wordings: int | None = 0, progress=None, extra_negatives=(), scorer: str = "auto"
                   ) -> dict:
    """Scores of a :class:`~vlmreward.pretrain.dataset.FrameDataset`, per environment and goal group.

    Each environment's goals are scored against ``num_negatives`` negatives (capped at its task set size - 1;
    None: all of it, the reward ``vlmreward train`` trains on) from its own task set. Returns {env_id: {group:
    {"probs" float64 (M,), "labels" bool (M,), "goals", "frames", "num_negatives", "wording"}}} with M = frames x
    goals of the group; groups "train", "heldout" and "eval:<k>" for the first ``wordings`` evaluation-only
    wordings (None: all): the training goals AND their negatives all said in wording k
    (:func:`vlmreward.envs.language.reword`), so a goal competes with its negatives in one phrasing. "wording":
    the group's first goal as scored. ``progress``: called once per scored goal set. ``extra_negatives``:
    strings that join every environment's negatives (those of its own task set left out; said in the group's
    wording too), e.g. :func:`vlmreward.envs.task_sets` of ``vlmreward train --negatives-from``. ``scorer``: of
    each :class:`RewardModel` ("auto": the relation head for two-object goals when the model has one).
    """
    from vlmreward.envs.language import num_wordings, reword
    out = {}
    for e, env_id in enumerate(ds.env_ids):
        rows = ds.env_index == e
        cols = np.asarray(ds.env_goals[e])
        task = [ds.goals[c] for c in cols]
        is_train = ds.train_goal_mask[cols]
        labels = ds.labels[rows][:, cols]
        own = set(task)
        extra = [s for s in extra_negatives if s not in own]
        pool = len(task) + len(extra) - 1
        n = pool if num_negatives is None else min(int(num_negatives), pool)
        kw = dict(num_negatives=n, templates=templates, template_ensembling=template_ensembling, seed=seed,
                  scorer=scorer)
        n_eval = max(num_wordings(g, "eval") for g in task)
        n_eval = n_eval if wordings is None else min(n_eval, int(wordings))
        sets = [("probs", task, extra)] + [(f"eval:{k}", [reword(g, k) for g in task], [reword(g, k) for g in extra])
                                           for k in range(n_eval)]
        probs = {}
        for key, goals, more in sets:
            probs[key] = (reward_probs(vlm, ds.frames[rows], goals, negatives=goals + more, **kw) if rows.any()
                          else np.zeros((0, len(goals))))
            if progress is not None:
                progress()
        groups = [("train", "probs", is_train), ("heldout", "probs", ~is_train)]
        groups += [(key, key, is_train) for key, *_ in sets[1:]]
        words = {key: goals for key, goals, _ in sets}
        out[env_id] = {group: {"probs": probs[key][:, m].ravel(), "labels": labels[:, m].ravel(),
                               "goals": int(m.sum()), "frames": int(rows.sum()), "num_negatives": n,
                               "wording": next((w for w, keep in zip(words[key], m) if keep), None)}
                       for group, key, m in groups}
    return out


def group_metrics(scores: dict, threshold: float | None = None) -> dict:
    """:func:`vlmreward.metrics.classification_metrics` of one group of :func:`dataset_scores` plus "goals",
    "frames", "num_negatives" and "pr_curve" ({"precision", "recall"}, :func:`vlmreward.metrics.pr_curve`);
    {"error": reason, "goals"} for a group without both classes."""
    from vlmreward.metrics import classification_metrics, pr_curve
    y, p = scores["labels"], scores["probs"]
    if scores["goals"] == 0 or y.size == 0 or y.min() == y.max():
        return {"error": f"{int(y.sum())} positives of {y.size}: needs both classes", "goals": scores["goals"]}
    r = classification_metrics(p, y, threshold=threshold)
    precision, recall = pr_curve(p, y)
    r.update(num_negatives=scores["num_negatives"], goals=scores["goals"], frames=scores["frames"],
             wording=scores.get("wording"), pr_curve={"precision": precision.tolist(), "recall": recall.tolist()})
    return r


def load_labelled_frames(path) -> dict:
    """A user's labelled frames from an ``.npz`` (``np.load(allow_pickle=False)``: no code runs).

    Arrays: ``frames`` uint8 (N, H, W, 3), ``goals`` strings (G,), ``labels`` bool (N, G) (label [i, g]: goal g
    holds in frame i), optional ``negatives`` strings (the task set negatives are drawn from; default: the
    goals). Returns {"frames", "goals" (list[str]), "labels", "negatives" (list[str] | None)}.

    Raises FileNotFoundError for a missing file, ValueError naming the problem for a corrupt file, object
    arrays, missing or unknown arrays, wrong dtypes or shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled frames file not found: {str(path)!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{str(path)!r} is not a readable .npz of arrays (corrupt, or it holds Python objects, "
                         f"which are not loaded): {e}") from e
    missing = [k for k in DATA_KEYS[:3] if k not in arrays]
    unknown = sorted(set(arrays) - set(DATA_KEYS))
    if missing or unknown:
        raise ValueError(f"{str(path)!r} must hold the arrays frames, goals, labels (and optionally negatives); "
                         f"missing {missing}, unknown {unknown}")
    frames, goals, labels = arrays["frames"], arrays["goals"], arrays["labels"]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) with N >= 1, got {frames.dtype} {frames.shape}")
    for key in ("goals", "negatives"):
        if key in arrays and (arrays[key].dtype.kind != "U" or arrays[key].ndim != 1 or arrays[key].size == 0):
            raise ValueError(f"{key} must be a non-empty 1-D array of strings, got {arrays[key].dtype} "
                             f"{arrays[key].shape}")
    if labels.dtype != np.bool_ or labels.shape != (len(frames), len(goals)):
        raise ValueError(f"labels must be bool (N, G) = {(len(frames), len(goals))} (frames x goals), got "
                         f"{labels.dtype} {labels.shape}")
    negatives = arrays.get("negatives")
    return {"frames": frames, "goals": goals.tolist(), "labels": labels,
            "negatives": None if negatives is None else negatives.tolist()}


def data_scores(vlm, data: dict, *, num_negatives: int | None, templates=("{}",), template_ensembling="normalized_mean",
                seed: int = 0, scorer: str = "auto") -> dict:
    """Scores of :func:`load_labelled_frames`' data in the layout of :func:`dataset_scores`: one group "goals"."""
    negatives = data["negatives"] or data["goals"]
    # GoalBank caps each goal's negatives at its pool (the task set minus the goal)
    pool = max(len({s for s in negatives if s != g}) for g in data["goals"])
    n = pool if num_negatives is None else min(int(num_negatives), pool)
    probs = reward_probs(vlm, data["frames"], data["goals"], negatives=negatives, num_negatives=n,
                         templates=templates, template_ensembling=template_ensembling, seed=seed, scorer=scorer)
    return {DATA_GROUP: {"probs": probs.ravel(), "labels": data["labels"].ravel(), "goals": len(data["goals"]),
                         "frames": len(data["frames"]), "num_negatives": n}}


def evaluate_reward_model(model: str = "default", env_ids=None, *, data=None, pretrained: str | None = None,
                          num_negatives: int | None = None, threshold: float | None = None, templates=("{}",),
                          template_ensembling: str = "normalized_mean", seed: int = 0, scale: float = 1.0,
                          out: str | Path | None = None, data_dir: str | Path = "data/evaluate",
                          device: str = "cpu", image_size: int | None = None, resize_mode: str | None = None,
                          interpolation: str | None = None, view: str = "", progress: bool = True,
                          return_scores: bool = False, negatives_from=(), scorer: str = "auto") -> dict:
    """Evaluate a reward model offline on labelled frames: registered environments' test seeds, or ``data``.

    Args:
        model, pretrained: passed to :func:`vlmreward.load_model` ("default", open_clip name + tag, a path).
        env_ids: registered ids (str or list); None = all five. Not with ``data``.
        data: path of a user's ``.npz`` of labelled frames (:func:`load_labelled_frames`), instead of
            environments; its results are keyed by the file's stem, group "goals".
        num_negatives: N, negatives per goal sampled from the task set (capped at its size - 1); None (default):
            the whole task set, the reward ``vlmreward train`` trains on (its ``--num-negatives`` default). With
            few sampled negatives a frame's own goal is rarely among a held-out goal's negatives, so frames of a
            look-alike object (same colour or type) score high on it: N changes what is measured.
        threshold: beta for the confusion counts; None uses each group's best-F1 beta.
        templates, template_ensembling: prompt templates of the goal bank and how they are combined
            (:class:`vlmreward.GoalBank`); seed: seed of the negatives' sampling.
        scale: multiplies the test recipe's episode counts (environments only).
        out: directory for evaluation.json / evaluation.md / pr_curves.png (None: no files).
        data_dir: cache of the generated test frames (environments only).
        image_size, resize_mode, interpolation: preprocess overrides of :func:`vlmreward.load_model`.
        view: household frames, "egocentric" or "room" ("" = the environments' default).
        negatives_from: env ids whose task sets join every environment's negatives (environments only; as
            ``vlmreward train --negatives-from``).
        return_scores: also return the raw (probs, labels) arrays under "scores" (not written to JSON).
        scorer: "auto", "embedding" or "relation" (:class:`vlmreward.RewardModel`; "auto" scores two-object goals
            with the model's relation head when it has one).
    Returns:
        {"model", "identity", "num_negatives", "results": {family key: {group: metrics dict}}, "table":
        markdown, ...}. A metrics dict is :func:`group_metrics`'.
    Raises:
        ValueError: unknown environment id, ``data`` with ``env_ids``, bad num_negatives/threshold, bad data
            (see :func:`load_labelled_frames`); errors of ``load_model``. FileNotFoundError: no ``data`` file.
    """
    from tqdm.auto import tqdm

    import vlmreward.envs as envs
    from vlmreward.models import load_model
    from vlmreward.pretrain.dataset import load_or_generate

    if data is not None and env_ids is not None:
        raise ValueError("pass either env_ids (registered environments) or data (a labelled .npz), not both")
    if data is None:
        env_ids = list(envs.ENV_IDS) if env_ids is None else ([env_ids] if isinstance(env_ids, str)
                                                             else list(env_ids))
        unknown = [e for e in env_ids if e not in envs.ENV_IDS]
        if unknown or not env_ids:
            raise ValueError(f"unknown environment id(s) {unknown}; choose from {list(envs.ENV_IDS)}")
    if num_negatives is not None and int(num_negatives) < 1:
        raise ValueError(f"num_negatives must be >= 1, got {num_negatives}")
    negatives_from = [negatives_from] if isinstance(negatives_from, str) else list(negatives_from or ())
    if negatives_from and data is not None:
        raise ValueError("negatives_from applies to the environments' test frames, not to data (put the extra "
                         "negatives in the file's negatives array)")
    extra_negatives = envs.task_sets(negatives_from)  # bad ids raise here, before any frames are generated
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    labelled = None if data is None else load_labelled_frames(data)
    vlm = load_model(model, pretrained, device=device, image_size=image_size, resize_mode=resize_mode,
                     interpolation=interpolation)
    kw = dict(num_negatives=num_negatives, templates=tuple(templates), template_ensembling=template_ensembling,
              seed=seed, scorer=scorer)
    report = {"model": model if pretrained is None else f"{model}:{pretrained}", "identity": vlm.identity,
              "num_negatives": None if num_negatives is None else int(num_negatives), "templates": list(templates),
              "template_ensembling": template_ensembling, "seed": seed, "preprocess": vlm.preprocess_kwargs,
              "negatives_from": negatives_from, "scorer": scorer}
    if labelled is not None:
        scores = {Path(data).stem: data_scores(vlm, labelled, **kw)}
        report["data"] = str(data)
    else:
        recipe = test_recipe(vlm, env_ids, scale, view)
        ds = load_or_generate(recipe, data_dir, progress)
        with tqdm(desc="evaluate (goal sets)", disable=not progress) as bar:
            scores = dataset_scores(vlm, ds, wordings=None, progress=bar.update, extra_negatives=extra_negatives,
                                    **kw)
        report["data_recipe"] = dataclasses.asdict(recipe)
    report["results"] = {key: {group: group_metrics(s, threshold) for group, s in groups.items()}
                         for key, groups in scores.items()}
    report["table"] = markdown_table(report)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        fileio.write_json(out / "evaluation.json", report, indent=1, default=list)
        fileio.write_text(out / "evaluation.md", report["table"] + "\n")
        plot_pr_curves(report, out / "pr_curves.png")
    if return_scores:
        report["scores"] = scores
    return report


def markdown_table(report: dict) -> str:
    """One row per (family, goal group): AP, ROC-AUC, best-F1 beta, N, confusion at beta."""
    n, more = report["num_negatives"], report.get("negatives_from")
    against = "the whole task set" if n is None else f"{n} negatives (capped by task set)"
    against += f" plus the task sets of {', '.join(more)}; " if more else "; "
    source = f"labelled frames `{report['data']}`." if "data" in report else "held-out test seeds."
    lines = [f"Model `{report['model']}`; reward p(goal|frame) vs {against}{source}", "",
             "| family | goals | N | frames | positives | AP | ROC-AUC | best-F1 beta | beta | precision | recall "
             "| TP | FP | TN | FN |", "|" + "---|" * 15]
    for key, res in report["results"].items():
        fam = family(key)
        for group, r in res.items():
            if "error" in r:
                lines.append(f"| {fam} | {group} | | | | n/a ({r['error']}) |" + " |" * 9)
                continue
            said = f" `{r['wording']}`" if group.startswith("eval") and r.get("wording") else ""
            lines.append(f"| {fam} | {group} ({r['goals']}){said} | {r['num_negatives']} | {r['frames']} "
                         f"| {r['positives']} | {r['average_precision']:.3f} | {r['roc_auc']:.3f} "
                         f"| {r['best_f1_threshold']:.3f} | {r['threshold']:.3f} | {r['precision']:.3f} "
                         f"| {r['recall']:.3f} | {r['tp']} | {r['fp']} | {r['tn']} | {r['fn']} |")
    return "\n".join(lines)


def plot_pr_curves(report: dict, path) -> None:
    """PNG: one panel per family, one precision-recall curve (over beta, drawn as steps like scikit-learn's
    ``PrecisionRecallDisplay``) per goal group, each with its chance
    line (precision = positive rate, dashed) and its counts (positives / scored (frame, goal) pairs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(report["results"])
    fig, axes = plt.subplots(1, len(keys), figsize=(3.8 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        frames, negatives = set(), set()
        for group, r in report["results"][key].items():
            if "pr_curve" not in r:
                continue
            frames.add(r["frames"])
            negatives.add(r["num_negatives"])
            (line,) = ax.plot(r["pr_curve"]["recall"], r["pr_curve"]["precision"], drawstyle="steps-post",
                              label=f"{group} AP={r['average_precision']:.2f} ({r['positives']}/{r['count']})")
            ax.axhline(r["positives"] / r["count"], color=line.get_color(), ls="--", lw=0.8)
        title = family(key) + (f"\n{max(frames)} frames, N={max(negatives)} negatives/goal" if frames else "")
        ax.set(title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.title.set_fontsize(8)
        if frames:
            ax.legend(fontsize=6, loc="best", title="dashed: chance", title_fontsize=6)
    fig.suptitle(f"{report['model']}: reward precision-recall over beta (positives/(frame, goal) pairs)",
                 fontsize=9)
    fig.tight_layout()
    fileio.write_with(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="default", help="'default', an open_clip name, or a local path")
    parser.add_argument("--pretrained", default=None, help="open_clip pretrained tag (with an open_clip name)")
    parser.add_argument("--env", nargs="+", default=None, help="environment ids (default: all five)")
    parser.add_argument("--data", default=None,
                        help="a labelled .npz (frames uint8 (N,H,W,3), goals (G,), labels bool (N,G), optional "
                             "negatives) instead of the environments")
    parser.add_argument("--negatives", type=int, default=None,
                        help="negatives per goal sampled from the task set (default: all of it, as vlmreward train)")
    parser.add_argument("--negatives-from", nargs="+", default=(), metavar="ENV",
                        help="environment ids whose task sets join every environment's negatives (as vlmreward "
                             "train --negatives-from)")
    parser.add_argument("--threshold", type=float, default=None, help="beta for confusion (default: best F1)")
    parser.add_argument("--templates", nargs="+", default=["{}"])
    parser.add_argument("--template-ensembling", default="normalized_mean", help="normalized_mean or mean")
    parser.add_argument("--image-size", type=int, default=None, help="override the model's input size")
    parser.add_argument("--resize-mode", default=None, help="override: shortest, longest or squash")
    parser.add_argument("--interpolation", default=None, help="override: bicubic or bilinear")
    from vlmreward.envs.household import VIEWS
    parser.add_argument("--view", default="", choices=["", *VIEWS],
                        help="household frames (default: the environments' own)")
    parser.add_argument("--scorer", default="auto", choices=["auto", "embedding", "relation"],
                        help="auto: goals that relate two objects are scored by the model's relation head when it "
                             "has one; embedding: pooled embeddings for every goal")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the test recipe's episodes")
    parser.add_argument("--out", default=None, help="output directory (default runs/evaluate/<model>)")
    parser.add_argument("--data-dir", default="data/evaluate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    out = args.out or str(Path("runs/evaluate") / Path(str(args.model)).name.replace(":", "_"))
    report = evaluate_reward_model(
        args.model, args.env, data=args.data, pretrained=args.pretrained, num_negatives=args.negatives,
        threshold=args.threshold, templates=tuple(args.templates), template_ensembling=args.template_ensembling,
        seed=args.seed, scale=args.scale, out=out, data_dir=args.data_dir, device=args.device,
        image_size=args.image_size, resize_mode=args.resize_mode, interpolation=args.interpolation,
        view=args.view, progress=not args.no_progress, negatives_from=args.negatives_from, scorer=args.scorer)
    print(report["table"])
    print(f"wrote {out}/evaluation.json, evaluation.md, pr_curves.png")
    return 0
