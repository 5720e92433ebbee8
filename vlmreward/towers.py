"""Vision towers that vlmreward registers with timm, so that open_clip configs can name them.

open_clip builds any timm model named by ``"vision_cfg": {"timm_model_name": ...}`` (``open_clip.TimmModel``:
the trunk, global pooling, a linear projection to the embedding). timm only knows its own sizes of ConvMixer
(Trockman & Kolter, "Patches Are All You Need?", arXiv 2201.09792), so the sizes vlmreward trains are
registered here, on ``import vlmreward`` (``vlmreward.models`` imports this module).

``vlmr_convmixer_{width}_{depth}_p12``: patch 12 (at 84 px one patch per cell of the 7x7 MiniGrid rooms),
``depth`` blocks of 3x3 depthwise + 1x1 pointwise convolutions. Every block mixes a cell with its neighbours,
which is what the household goals are about (the cell the agent faces, an object next to another); a ViT of
the default model's size (patch 12, width 128, 4 layers) learns these relations far more slowly
(docs/default_model.md: a Find probe reached AP 1.0 in 200 steps with ConvMixer-256/4, 0.02 with the ViT).
The default model uses 256/4; the smaller sizes are the scaling study's.
"""
from __future__ import annotations

import sys

import torch
from timm.models import register_model
from timm.models._builder import build_model_with_cfg
from timm.models.convmixer import ConvMixer, _create_convmixer
from torch import nn

#: (width, depth) of the registered ConvMixers, smallest first.
CONVMIXER_SIZES = ((32, 2), (64, 2), (128, 3), (256, 4))
#: timm names registered by this module.
TIMM_MODELS = tuple(f"vlmr_convmixer_{w}_{d}_p12" for w, d in CONVMIXER_SIZES)


def _convmixer_entrypoint(name: str, width: int, depth: int):
    def entrypoint(pretrained: bool = False, **kwargs):
        if pretrained:
            raise ValueError(f"{name} has no pretrained timm weights; load trained weights with "
                             "vlmreward.load_model")
        if kwargs.get("pretrained_cfg") is None:  # timm warns without one
            kwargs["pretrained_cfg"] = {"num_classes": 0, "input_size": (3, 84, 84), "mean": (0.5,) * 3,
                                        "std": (0.5,) * 3, "first_conv": "stem.0", "classifier": "head",
                                        "pool_size": (7, 7)}  # 84 px / patch 12: attention pooling's grid
        return _create_convmixer(name, pretrained, dim=width, depth=depth, kernel_size=3, patch_size=12,
                                 **kwargs)
    entrypoint.__name__ = entrypoint.__qualname__ = name  # timm registers a model under its function's name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"ConvMixer-{width}/{depth}, kernel 3, patch 12 (no pretrained weights)."
    return entrypoint


for _name, (_w, _d) in zip(TIMM_MODELS, CONVMIXER_SIZES):
    setattr(sys.modules[__name__], _name, register_model(_convmixer_entrypoint(_name, _w, _d)))


class NeighbourRelationConvMixer(ConvMixer):
    """ConvMixer whose pooled features add a relation term over every pair of 4-adjacent cells: a relation
    network (Santoro et al., arXiv 1706.01427) restricted to neighbours. Each pair's features [f_i, f_j] go
    through an MLP (in both orders, so the term is symmetric like "next to"), and the mean over pairs joins
    the average pool. Average pooling alone keeps what is in the room, not which objects touch (the default
    model's PickPlace errors are mostly frames where one goal object is next to another object:
    docs/results/default_model.md). The MLP's last layer starts at zero, so the model starts as the plain
    ConvMixer (a warm start from its weights is exact)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        d = self.num_features
        self.relation = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
        nn.init.zeros_(self.relation[2].weight)
        nn.init.zeros_(self.relation[2].bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        # relation(f_i, f_j) = W2 gelu(W1a f_i + W1b f_j + b1) + b2: the first layer is split per cell and the
        # second applied after the mean (both linear), ~5x cheaper than the MLP on every (B, P, 2C) pair
        first, _, last = self.relation
        d = self.num_features
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        a = nn.functional.linear(t, first.weight[:, :d], first.bias)
        b = nn.functional.linear(t, first.weight[:, d:])
        act = nn.functional.gelu
        pairs = [act(a[:, :, :-1] + b[:, :, 1:]), act(a[:, :, 1:] + b[:, :, :-1]),  # left-right, both orders
                 act(a[:, :-1] + b[:, 1:]), act(a[:, 1:] + b[:, :-1])]                # up-down, both orders
        count = pairs[0].shape[1] * pairs[0].shape[2] + pairs[2].shape[1] * pairs[2].shape[2]
        hidden = sum(h.sum((1, 2)) for h in pairs) / count  # (B, C): the mean over pairs of both orders' sum
        x = self.global_pool(x) + last(hidden) + last.bias
        return x if pre_logits else self.head(self.head_drop(x))


def vlmr_convmixer_256_4_p12_rel(pretrained: bool = False, **kwargs):
    """ConvMixer-256/4, kernel 3, patch 12, with the neighbour-relation pooling of NeighbourRelationConvMixer."""
    if pretrained:
        raise ValueError("vlmr_convmixer_256_4_p12_rel has no pretrained timm weights")
    if kwargs.get("pretrained_cfg") is None:
        kwargs["pretrained_cfg"] = {"num_classes": 0, "input_size": (3, 84, 84), "mean": (0.5,) * 3,
                                    "std": (0.5,) * 3, "first_conv": "stem.0", "classifier": "head",
                                    "pool_size": (7, 7)}
    kwargs.pop("out_indices", None)
    return build_model_with_cfg(NeighbourRelationConvMixer, "vlmr_convmixer_256_4_p12_rel", pretrained, dim=256,
                                depth=4, kernel_size=3, patch_size=12, **kwargs)


register_model(vlmr_convmixer_256_4_p12_rel)
