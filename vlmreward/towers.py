"""Vision towers that vlmreward registers with timm, so that open_clip configs can name them.

open_clip builds any timm model named by ``"vision_cfg": {"timm_model_name": ...}`` (``open_clip.TimmModel``:
the trunk, global pooling, a linear projection to the embedding). timm only knows its own sizes of ConvMixer
(Trockman & Kolter, "Patches Are All You Need?", arXiv 2201.09792), so the default reward model's size is
registered here, on ``import vlmreward`` (``vlmreward.models`` imports this module).

``vlmr_convmixer_256_4_p12``: patch 12 (at 84 px one patch per cell of the 7x7 MiniGrid rooms), width 256,
4 blocks of 3x3 depthwise + 1x1 pointwise convolutions. Every block mixes a cell with its neighbours, which is
what the household goals are about (the cell the agent faces, an object next to another); a ViT of the same
size (patch 12, width 128, 4 layers) learns these relations far more slowly (docs/default_model.md: a Find
probe reached AP 1.0 in 200 steps with this tower, 0.02 with the ViT).
"""
from __future__ import annotations

from timm.models import register_model
from timm.models.convmixer import _create_convmixer

#: timm names registered by this module.
TIMM_MODELS = ("vlmr_convmixer_256_4_p12",)


@register_model
def vlmr_convmixer_256_4_p12(pretrained: bool = False, **kwargs):
    """ConvMixer-256/4, kernel 3, patch 12 (no pretrained weights exist; ``pretrained`` must be False)."""
    if pretrained:
        raise ValueError("vlmr_convmixer_256_4_p12 has no pretrained timm weights; "
                         "load trained weights with vlmreward.load_model")
    if kwargs.get("pretrained_cfg") is None:  # timm warns without one
        kwargs["pretrained_cfg"] = {"num_classes": 0, "input_size": (3, 84, 84), "mean": (0.5,) * 3,
                                         "std": (0.5,) * 3, "first_conv": "stem.0", "classifier": "head"}
    return _create_convmixer("vlmr_convmixer_256_4_p12", pretrained, dim=256, depth=4, kernel_size=3,
                             patch_size=12, **kwargs)
