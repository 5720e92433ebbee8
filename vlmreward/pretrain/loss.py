"""Training losses for the default reward model.

Two terms, both on the same (frames x captions) logits ``logit_scale * cos(image, text)``:

* :class:`MultiPositiveClipLoss` -- open_clip's ``ClipLoss`` with a ground-truth label matrix instead of
  the identity: a frame may satisfy several captions of the batch (and a caption several frames), so the
  targets are the normalised label rows/columns (soft multi-positive targets, as in SupCon-style CLIP
  training) and duplicate true captions are never pushed apart as negatives. Frames with no true caption
  only act as negatives (text -> image direction).
* :func:`reward_bce` -- the reward of Baumli et al. (arXiv 2312.09187, eq. 1) trained directly as a binary
  classifier: for a query goal ``g`` and ``N`` negatives from the same environment's goals,
  ``p = softmax([s_g, s_neg...])[0]`` and the loss is BCE(p, success(g)). This is exactly the quantity
  that is thresholded at reward time, so it also calibrates ``logit_scale`` (1/tau) for that use: frames
  where no goal holds must give a low ``p`` to every goal. Optionally part of the queries are hard
  within-family negatives (the frame's highest-scoring goals that do not hold).
* :func:`family_sigmoid` -- a per-goal sigmoid loss within the frame's task set (SigLIP-style), so a goal's
  score drops wherever it does not hold even with no competing goal (single-goal families).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss


class MultiPositiveClipLoss(ClipLoss):
    """open_clip ``ClipLoss`` with several positives per row/column (single process only).

    forward(image_features (B,D), text_features (K,D), logit_scale (scalar tensor, = exp of the parameter),
    labels bool (B,K)) -> scalar loss; features are expected L2-normalised (open_clip's convention).
    Raises ValueError on shape mismatch.
    """

    def __init__(self):
        super().__init__(local_loss=False, gather_with_grad=False, cache_labels=False, rank=0, world_size=1)

    def forward(self, image_features, text_features, logit_scale, labels, output_dict=False):
        if labels.shape != (image_features.shape[0], text_features.shape[0]):
            raise ValueError(f"labels must be (B,K)={(image_features.shape[0], text_features.shape[0])}, "
                             f"got {tuple(labels.shape)}")
        logits_per_image, logits_per_text = self.get_logits(image_features, text_features, logit_scale)
        y = labels.float()
        terms = []
        rows = y.sum(1) > 0
        if rows.any():  # image -> text: soft target spread over the true captions
            t = y[rows] / y[rows].sum(1, keepdim=True)
            terms.append(-(t * logits_per_image[rows].log_softmax(-1)).sum(-1).mean())
        cols = y.sum(0) > 0
        if cols.any():  # text -> image: each caption against the frames of the batch
            t = y.T[cols] / y.T[cols].sum(1, keepdim=True)
            terms.append(-(t * logits_per_text[cols].log_softmax(-1)).sum(-1).mean())
        loss = torch.stack(terms).mean() if terms else logits_per_image.sum() * 0.0
        return {"contrastive_loss": loss} if output_dict else loss


def sample_goal_sets(labels: torch.Tensor, candidates: torch.Tensor, num_queries: int, num_negatives: int,
                     generator: torch.Generator | None = None, scores: torch.Tensor | None = None,
                     num_hard: int = 0):
    """Sample reward queries like the paper's goal bank: a goal and ``num_negatives`` other goals.

    labels bool (B,K); candidates bool (B,K): the goals of each frame's environment (its training task set).
    Half of the queries (when available) are goals that hold, the rest uniform over the candidates; negatives
    are uniform over the candidates minus the query. With ``scores`` (B,K) (the model's current logits,
    detached) ``num_hard`` of the non-positive queries are hard negatives instead: the highest-scoring
    candidate goals that do NOT hold in the frame (e.g. "go to the red ball" while the red ball is only
    visible), the within-family confusions the thresholded reward must reject. Returns (query (B,Q) int64, negatives (B,Q,N) int64,
    valid (B,Q) bool). Raises ValueError if some frame has fewer than ``num_negatives + 1`` candidates.
    """
    B, K = labels.shape
    n_cand = candidates.sum(1)
    if (n_cand < num_negatives + 1).any():
        raise ValueError(f"a frame has {int(n_cand.min())} candidate goals, need num_negatives+1={num_negatives + 1}")
    dev = labels.device
    r = torch.rand(B, K, generator=generator, device=dev)
    # queries: positives first (random order), then random candidates
    pos_first = torch.where(labels & candidates, 2.0 + r, torch.where(candidates, r, -1.0))
    pos_q = pos_first.topk(num_queries // 2, dim=1).indices
    rnd = torch.where(candidates, torch.rand(B, K, generator=generator, device=dev), -1.0)
    num_hard = min(num_hard, num_queries - num_queries // 2) if scores is not None else 0
    parts = [pos_q]
    if num_hard:  # false candidates ranked by the model's score, then (if too few) any candidate
        if scores.shape != (B, K):
            raise ValueError(f"scores must be (B,K)={(B, K)}, got {tuple(scores.shape)}")
        rank = scores.float().argsort(1).argsort(1).float() / K  # in [0, 1), order of the score
        hard = torch.where(candidates & ~labels, 2.0 + rank, torch.where(candidates, rank - 2.0, -3.0))
        parts.append(hard.topk(num_hard, dim=1).indices)
    parts.append(rnd.topk(num_queries - num_queries // 2 - num_hard, dim=1).indices)
    query = torch.cat(parts, 1)  # (B,Q)
    valid = torch.gather(candidates, 1, query)
    # negatives: top-N of random scores over candidates excluding the query
    scores = torch.rand(B, query.shape[1], K, generator=generator, device=dev)
    scores = scores.masked_fill(~candidates[:, None, :], -1.0)
    scores.scatter_(2, query[..., None], -2.0)
    negatives = scores.topk(num_negatives, dim=2).indices  # (B,Q,N)
    return query, negatives, valid


def reward_bce(logits: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, negatives: torch.Tensor,
               valid: torch.Tensor, *, drop_conflicts: bool = True) -> torch.Tensor:
    """BCE of the paper's reward probability against ground truth.

    logits (B,K) = logit_scale * cos; labels bool (B,K); query (B,Q), negatives (B,Q,N), valid (B,Q) from
    :func:`sample_goal_sets`. ``p = exp(l_q) / (exp(l_q) + sum_n exp(l_n))``; with ``drop_conflicts`` pairs
    where the query and a negative both hold are skipped (no model can give p=1 there). Returns a scalar.
    """
    lq = torch.gather(logits, 1, query)  # (B,Q)
    ln = torch.gather(logits[:, None, :].expand(-1, query.shape[1], -1), 2, negatives)  # (B,Q,N)
    yq = torch.gather(labels, 1, query)
    log_neg = torch.logsumexp(ln, -1)
    log_all = torch.logaddexp(lq, log_neg)
    log_p, log_1mp = lq - log_all, log_neg - log_all
    loss = -(yq.float() * log_p + (~yq).float() * log_1mp)
    mask = valid
    if drop_conflicts:
        neg_true = torch.gather(labels[:, None, :].expand(-1, query.shape[1], -1), 2, negatives).any(-1)
        mask = mask & ~(yq & neg_true)
    if not mask.any():
        return logits.sum() * 0.0
    # positives are rare: weight both classes equally
    m = mask.float()
    wp, wn = (yq.float() * m), ((~yq).float() * m)
    lp = (loss * wp).sum() / wp.sum().clamp_min(1)
    ln_ = (loss * wn).sum() / wn.sum().clamp_min(1)
    return 0.5 * (lp + ln_) if wp.sum() > 0 else ln_


def family_sigmoid(logits: torch.Tensor, labels: torch.Tensor, candidates: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
    """Per-goal sigmoid loss within each frame's task family (SigLIP, Zhai et al., arXiv 2303.15343).

    ``BCE(sigmoid(logits - bias), labels)`` over the candidate goals of each frame (its environment's
    training goals), positives and negatives weighted equally. Unlike the softmax reward it scores each goal
    on its own, so a goal's score must drop on frames where it does not hold even when no other goal of the
    family is more likely (e.g. "go to the red ball" with the ball visible but not faced; a fallen pole for
    CartPole's single training goal). logits (B,K), labels/candidates bool (B,K), bias scalar (a
    training-only parameter). Returns a scalar; ValueError on shape mismatch.
    """
    if labels.shape != logits.shape or candidates.shape != logits.shape:
        raise ValueError(f"logits, labels, candidates must share a shape, got {tuple(logits.shape)}, "
                         f"{tuple(labels.shape)}, {tuple(candidates.shape)}")
    loss = F.binary_cross_entropy_with_logits(logits - bias, labels.float(), reduction="none")
    wp, wn = (labels & candidates).float(), (~labels & candidates).float()
    ln = (loss * wn).sum() / wn.sum().clamp_min(1)
    if wp.sum() == 0:
        return ln
    return 0.5 * ((loss * wp).sum() / wp.sum() + ln)
