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

from timm.models import register_model
from timm.models.convmixer import _create_convmixer

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
