"""Towers that vlmreward registers with timm and open_clip, so that open_clip configs can name them.

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

``"hf_pooler_type": "vlmr_token_mlp_pooler"`` (:class:`VlmrTokenMlpPooler`): a trainable text pooler over the
frozen Hugging Face tower's token states.
"""
from __future__ import annotations

import sys

import torch
from open_clip.hf_model import register_pooler
from timm.models import register_model
from timm.models.convmixer import _create_convmixer
from torch import nn
from torch.nn import functional as F

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


@register_pooler
class VlmrTokenMlpPooler(nn.Module):
    """Masked mean of token states after a per-token residual MLP: mean_t (h_t + W2 gelu(W1 LayerNorm(h_t))).

    Why: a mean of a frozen text tower's token states binds words only weakly ("put the red key next to the
    green ball" and "... green key next to the red ball": cosine 0.99 for MiniLM, and no linear read-out of the
    mean names the key's colour for colour pairs it was not fitted on), while each noun's own state names its
    adjective (linearly, also for unseen pairs). A non-linear map of every token BEFORE pooling can turn the
    noun's state into a conjunction (a red key) that survives the mean; the mean keeps the relation symmetric
    in its two objects. W2 starts at zero, so the pooler starts as open_clip's ``mean_pooler``.

    forward(x: a transformers output with ``last_hidden_state`` (B,L,width), attention_mask (B,L) 0/1) ->
    (B,width), the dtype of the states. open_clip builds it without arguments (width 384, MiniLM-L6's);
    :func:`size_text_pooler` rebuilds it for another tower's width.
    """

    def __init__(self, width: int = 384, hidden: int = 128):
        super().__init__()
        self.width = width
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x, attention_mask: torch.Tensor) -> torch.Tensor:
        h = x.last_hidden_state
        h = h + self.fc2(F.gelu(self.fc1(self.norm(h))))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * mask).sum(1) / mask.sum(1).clamp_min(1)


def size_text_pooler(module: nn.Module) -> None:
    """Rebuilds a :class:`VlmrTokenMlpPooler` of an open_clip model whose Hugging Face text tower is not
    384 wide (open_clip constructs poolers without arguments), on the tower's device and dtype."""
    text = getattr(module, "text", None)
    pooler = getattr(text, "pooler", None)
    if not isinstance(pooler, VlmrTokenMlpPooler):
        return
    width = int(text.config.hidden_size)
    if width != pooler.width:
        like = next(text.transformer.parameters())
        text.pooler = VlmrTokenMlpPooler(width).to(device=like.device, dtype=like.dtype)
