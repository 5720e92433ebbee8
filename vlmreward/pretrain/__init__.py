"""Training the embedded default reward model (``vlmreward pretrain``).

Modules: :mod:`~vlmreward.pretrain.dataset` (labelled frames from the environments),
:mod:`~vlmreward.pretrain.captions` (training captions from the wording grammar, partial goals),
:mod:`~vlmreward.pretrain.loss` (multi-positive CLIP loss + the paper's reward as a classifier),
:mod:`~vlmreward.pretrain.text` (caption embeddings, frozen or trained text towers),
:mod:`~vlmreward.pretrain.train` (the training loop and CLI).
"""
