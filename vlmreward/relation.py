"""The object-relation head: rewards for goals that relate two objects ("put the red key next to the green ball").

A pooled image embedding and one caption embedding score such goals poorly on colour-type pairs never trained
on (docs/results/default_model.md, "Object slots matched per cell"). This head scores them from parts instead:

- image: the preprocessed frame (B, 3, S, S) is cut into a ``grid`` x ``grid`` grid of cells (one per room cell
  of the household environments at 84 px); a small CNN embeds each cell on its own -> unit vectors (B, C, D);
- text: each of the caption's two objects is found by its noun (``nouns``) and the attribute word before it
  (``attributes``); its embedding is ``W LN(h_noun) + W LN(h_attribute)`` with h the text tower's frozen token
  states -> unit vectors (K, 2, D);
- score (:func:`relation_scores`): ``tau * logsumexp`` over ordered 4-adjacent cell pairs (i, j) of
  ``(cos(cell_i, object_1) + cos(cell_j, object_2)) / tau`` -- the best-matching pair of neighbouring cells;
- logits = ``exp(log_scale) * score``, used in place of ``logit_scale * cos`` in eq. 1 of Baumli et al.
  (arXiv 2312.09187): the softmax over the goal's set and the threshold beta are unchanged.

The relation word itself is not read (adjacency is the only relation the head scores) and "next to" is
symmetric, so the order of the two objects in the caption does not matter. A model carries the head in its hub
directory (``relation_head.safetensors`` + ``"vlmreward": {"relation_head": config}`` in
``open_clip_config.json``); :class:`vlmreward.RewardModel` uses it for banks whose every string names two objects.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_NAME = "relation_head.safetensors"
CONFIG_KEY = "relation_head"


def relation_scores(cells: torch.Tensor, objects: torch.Tensor, grid: int, tau: float) -> torch.Tensor:
    """Adjacency scores of object pairs in a grid of cell embeddings.

    Args:
        cells: (B, grid * grid, D) float, cell embeddings in row-major order (unit length for cosines).
        objects: (K, 2, D) float, the two object embeddings of each of K captions (unit length).
        grid: cells per side (>= 2).
        tau: softness of the max over cell pairs (> 0; tau -> 0 gives the max).

    Returns (B, K) float: ``tau * logsumexp_{(i, j) adjacent} (cells_i . objects_k1 + cells_j . objects_k2) / tau``
    over the ordered pairs of cells sharing an edge, in [-2, 2] for unit vectors (plus at most tau log 168 at
    grid 7). Differentiable; any device.
    """
    if cells.dim() != 3 or cells.shape[1] != grid * grid:
        raise ValueError(f"cells must be (B, {grid * grid}, D) for grid {grid}, got {tuple(cells.shape)}")
    if objects.dim() != 3 or objects.shape[1] != 2 or objects.shape[2] != cells.shape[2]:
        raise ValueError(f"objects must be (K, 2, {cells.shape[2]}), got {tuple(objects.shape)}")
    if grid < 2 or not tau > 0:
        raise ValueError(f"grid must be >= 2 and tau > 0, got grid={grid}, tau={tau}")
    b, k, c = cells.shape[0], objects.shape[0], grid * grid
    # (B, K, C): per frame and caption, the cosines / tau of every cell with each object (two batched matmuls)
    scaled = objects / tau
    first = torch.matmul(scaled[:, 0], cells.transpose(1, 2))
    second = torch.matmul(scaled[:, 1], cells.transpose(1, 2))
    # sum_j e^{second_j} sum_{i next to j} e^{first_i}, each exponent shifted by its maximum over the cells (the
    # shifts cancel: they carry no gradient); the neighbour sum is a matmul with the adjacency
    top1, top2 = first.detach().amax(2, keepdim=True), second.detach().amax(2, keepdim=True)
    adjacency = _adjacency(grid, cells.device, cells.dtype)
    if torch.is_grad_enabled() and (cells.requires_grad or objects.requires_grad):
        total = (((first - top1).exp() @ adjacency) * (second - top2).exp()).sum(2)
    else:  # inference: in place, no copies of the (B, K, C) tensors
        total = (first.sub_(top1).exp_() @ adjacency).mul_(second.sub_(top2).exp_()).sum(2)
    out = tau * (total.log() + (top1 + top2).squeeze(2))
    if bool(torch.isfinite(out).all()):
        return out
    # the product of two shifted exponentials underflowed (cosines far apart at a small tau): logsumexp throughout
    first = torch.matmul(scaled[:, 0], cells.transpose(1, 2))
    second = torch.matmul(scaled[:, 1], cells.transpose(1, 2))
    near = torch.logsumexp(first[..., None] + torch.log(adjacency), dim=2)  # (B, K, C): log sum over neighbours
    return tau * torch.logsumexp(near + second, dim=2)


def _adjacency(grid: int, device, dtype) -> torch.Tensor:
    """(C, C) 0/1: cells i and j of a row-major grid share an edge."""
    rows, cols = torch.div(torch.arange(grid * grid), grid, rounding_mode="floor"), torch.arange(grid * grid) % grid
    manhattan = (rows[:, None] - rows[None]).abs() + (cols[:, None] - cols[None]).abs()
    return (manhattan == 1).to(device, dtype)


class RelationHead(nn.Module):
    """Cell and object embeddings for :func:`relation_scores` (see the module docstring).

    Args:
        nouns: words that name an object (lower case; e.g. the object types plus "object").
        attributes: words that qualify the noun right after them (e.g. the colours).
        grid: cells per side of the image (the model's input size must be a multiple of it).
        dim: embedding width D.
        text_width: width of the text tower's token states (384 for MiniLM-L6).
        tau: softness of the max over cell pairs.
    """

    def __init__(self, nouns: Sequence[str], attributes: Sequence[str], *, grid: int = 7, cell_size: int = 12,
                 dim: int = 64, text_width: int = 384, tau: float = 0.1):
        super().__init__()
        nouns, attributes = [str(w).lower() for w in nouns], [str(w).lower() for w in attributes]
        if not nouns or set(nouns) & set(attributes):
            raise ValueError("a relation head needs at least one noun, and no word may be both noun and attribute")
        if grid < 2 or cell_size < 1 or dim < 1 or text_width < 1 or not tau > 0:
            raise ValueError(f"bad relation head size: grid={grid}, cell_size={cell_size}, dim={dim}, "
                             f"text_width={text_width}, tau={tau}")
        self.config = {"nouns": nouns, "attributes": attributes, "grid": int(grid), "cell_size": int(cell_size),
                       "dim": int(dim), "text_width": int(text_width), "tau": float(tau)}
        self.grid, self.cell_size, self.tau = int(grid), int(cell_size), float(tau)
        reduced = -(-(-(-cell_size // 2)) // 2)  # two stride-2 convolutions (kernel 3, padding 1): ceil twice
        self.cell = nn.Sequential(nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.GELU(),
                                  nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(),
                                  nn.Linear(64 * reduced * reduced, 128), nn.GELU(), nn.Linear(128, dim))
        self.word = nn.Sequential(nn.LayerNorm(text_width), nn.Linear(text_width, dim))
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # logits = exp(log_scale) * score

    @classmethod
    def from_config(cls, config: dict) -> "RelationHead":
        """A head of ``config`` (a head's ``.config``); ValueError for a malformed one."""
        try:
            return cls(config["nouns"], config["attributes"], **{k: config[k] for k in (
                "grid", "cell_size", "dim", "text_width", "tau")})
        except (KeyError, TypeError) as e:
            raise ValueError(f"invalid relation head config {config!r}: {type(e).__name__}: {e}") from e

    @property
    def logit_scale(self) -> float:
        return float(self.log_scale.detach().exp())

    def cells(self, pixels: torch.Tensor) -> torch.Tensor:
        """Unit cell embeddings (B, grid * grid, D) from preprocessed pixels (B, 3, S, S), S a multiple of grid."""
        b, _, s, s2 = pixels.shape
        c = self.cell_size
        if s != s2 or s != c * self.grid:
            raise ValueError(f"the relation head needs {c * self.grid}x{c * self.grid} inputs ({self.grid} cells "
                             f"of {c} px per side), got {s}x{s2}")
        x = pixels.reshape(b, 3, self.grid, c, self.grid, c).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, c, c)
        return F.normalize(self.cell(x).reshape(b, self.grid * self.grid, -1), dim=-1)

    def objects(self, noun_states: torch.Tensor, attribute_states: torch.Tensor, has_attribute: torch.Tensor
                ) -> torch.Tensor:
        """Unit object embeddings (K, 2, D) from :func:`object_token_states`' outputs."""
        v = self.word(noun_states) + has_attribute * self.word(attribute_states)
        return F.normalize(v, dim=-1)

    def scores(self, cells: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """(B, K) relation scores (:func:`relation_scores` with the head's grid and tau)."""
        return relation_scores(cells, objects, self.grid, self.tau)


def find_objects(words: Sequence[str], nouns: Sequence[str], attributes: Sequence[str]) -> list[tuple[int, int]]:
    """(noun word index, attribute word index or -1) of each object named in ``words`` (lower-cased words)."""
    out = []
    for i, w in enumerate(words):
        if w in nouns:
            out.append((i, i - 1 if i > 0 and words[i - 1] in attributes else -1))
    return out


def object_spans(hf_tokenizer, texts: Sequence[str], nouns, attributes, *, context_length: int):
    """Tokenise ``texts`` and find the token positions of their two objects.

    Returns (encoding with ``input_ids`` / ``attention_mask`` (K, context_length), per text a list of two
    (noun token positions, attribute token positions or None)). Raises ValueError naming a text that does not
    name exactly two objects within the context length.
    """
    texts = list(texts)
    enc = hf_tokenizer([t.lower() for t in texts], padding="max_length", truncation=True,
                       max_length=context_length, return_tensors="pt")
    spans = []
    for k, text in enumerate(texts):
        tokens: dict[int, list[int]] = {}
        for pos, w in enumerate(enc.word_ids(k)):
            if w is not None:
                tokens.setdefault(w, []).append(pos)
        words = [hf_tokenizer.convert_tokens_to_string(
            hf_tokenizer.convert_ids_to_tokens(enc["input_ids"][k, tokens[w]].tolist())).strip()
            for w in sorted(tokens)]
        found = find_objects(words, nouns, attributes)
        if len(found) != 2:
            raise ValueError(f"{text!r} names {len(found)} objects (nouns {sorted(set(nouns))}); the relation head "
                             "scores captions that name exactly two")
        order = sorted(tokens)
        spans.append([(tokens[order[n]], tokens[order[a]] if a >= 0 else None) for n, a in found])
    return enc, spans


def object_token_states(text_tower, hf_tokenizer, texts: Sequence[str], nouns, attributes, *,
                        context_length: int, batch_size: int = 256):
    """Frozen token states of the two objects of each text: the mean state of each object's noun and of its
    attribute word (zeros where it has none).

    Args:
        text_tower: open_clip's ``HFTextEncoder`` (its ``transformer`` is run in eval mode, no gradient).
        hf_tokenizer: the Hugging Face fast tokenizer of that tower (word boundaries come from ``word_ids``).
        texts: K strings, each naming exactly two objects (a noun of ``nouns``, optionally after an attribute).

    Returns (noun_states (K, 2, W), attribute_states (K, 2, W), has_attribute (K, 2, 1)), float32 on the CPU.
    Raises ValueError as :func:`object_spans`.
    """
    texts = list(texts)
    enc, spans = object_spans(hf_tokenizer, texts, nouns, attributes, context_length=context_length)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    width = text_tower.transformer.config.hidden_size
    count = len(texts)
    noun, attr, has = torch.zeros(count, 2, width), torch.zeros(count, 2, width), torch.zeros(count, 2, 1)
    # rows of similar length together, each batch cut to its longest row: padding is masked, so the states of
    # the real tokens do not depend on it (captions use ~12 of the 32 positions)
    order = torch.argsort(mask.sum(1), stable=True)
    was_training = text_tower.transformer.training
    text_tower.transformer.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                rows = order[i:i + batch_size]
                n = int(mask[rows].sum(1).max())
                states = text_tower.transformer(input_ids=ids[rows, :n].to(_device(text_tower)),
                                                attention_mask=mask[rows, :n].to(_device(text_tower))
                                                ).last_hidden_state.float().cpu()
                for r, k in enumerate(rows.tolist()):
                    for s, (n_pos, a_pos) in enumerate(spans[k]):
                        noun[k, s] = states[r, n_pos].mean(0)
                        if a_pos is not None:
                            attr[k, s], has[k, s] = states[r, a_pos].mean(0), 1.0
    finally:
        text_tower.transformer.train(was_training)
    return noun, attr, has


def _device(module) -> torch.device:
    return next(module.parameters()).device
