"""Nearest training goal of each evaluation wording (by its best training wording): frozen MiniLM (pooled,
before the projection) against the default model's text embedding (after its trained projection).

    python docs/results/classic_wordings/nearest_wording.py [MODEL]   (default: the embedded default model)
"""
import sys, torch, torch.nn.functional as F, vlmreward
from vlmreward.envs.language import CLASSIC_WORDINGS, wordings
from vlmreward.pretrain.text import CaptionEncoder
torch.set_num_threads(1)
vlm = vlmreward.load_model(sys.argv[1] if len(sys.argv) > 1 else "default")
def pooled(s):  # the frozen MiniLM's pooled output, before the trained projection
    with torch.no_grad(): return F.normalize(CaptionEncoder._pool(vlm.model.text, vlm.tokenizer(s)), dim=-1)
def proj(s):  # the model's text embedding
    return F.normalize(vlm.encode_text(s), dim=-1)
def report(goals, evals):
    train = [(g, w) for g in goals for w in wordings(g, "train")]
    P, Q = pooled([w for _, w in train]), proj([w for _, w in train])
    for g, e in evals:
        for name, emb, M in (("MiniLM", pooled([e]), P), ("proj", proj([e]), Q)):
            s = (emb @ M.T)[0]
            best = {}
            for (gg, w), v in zip(train, s.tolist()):
                best[gg] = max(best.get(gg, -9), v)
            top = sorted(best.items(), key=lambda kv: -kv[1])[:3]
            ok = top[0][0] == g
            print(f"{'OK ' if ok else 'BAD'} {name:6s} {e!r:55s} own {best[g]:.2f} | " + "; ".join(f"{k[:30]} {v:.2f}" for k, v in top))
cg = list(CLASSIC_WORDINGS)[:5]
report(cg, [(g, e) for g in cg for e in CLASSIC_WORDINGS[g]["eval"]])
fg = ["go to the red ball", "go to the blue key", "go to the red key", "go to the green ball"]
lg = ["pick up the red ball", "pick up the blue key"]
report(fg + lg, [("go to the red ball", e) for e in wordings("go to the red ball", "eval")] + [("pick up the red ball", e) for e in wordings("pick up the red ball", "eval")])
