"""Caption embeddings during training, for both kinds of text tower.

* From-scratch open_clip text transformer: captions are tokenised once and encoded every step (trained).
* Frozen pretrained Hugging Face tower (locked-text tuning): the transformer + pooler outputs are computed
  ONCE per caption; each step only runs the trainable projection ``model.text.proj`` on them. The result
  equals ``model.encode_text(tokens)`` (tested), at a fraction of the cost.
"""
from __future__ import annotations

import open_clip
import torch
import torch.nn.functional as F

from vlmreward.models import get_tokenizer


class CaptionEncoder(torch.nn.Module):
    """Embeddings of ``captions[k][t]`` (K goals x T templates, every goal the same number of templates).

    ``forward(template_index int64 (K,)) -> (K,D)`` L2-normalised, differentiable w.r.t. the trainable part.
    """

    def __init__(self, model, model_name: str, captions: list[list[str]]):
        super().__init__()
        if not captions or len({len(c) for c in captions}) != 1:
            raise ValueError("captions must be a non-empty list of equally long template lists")
        self.model = model
        self.K, self.T = len(captions), len(captions[0])
        flat = [c for row in captions for c in row]
        tokens = get_tokenizer(model_name)(flat)
        # a locked Hugging Face transformer (vlmreward.models.build_model): its outputs never change
        text = getattr(model, "text", None)
        self.frozen = isinstance(text, open_clip.hf_model.HFTextEncoder) and not any(
            p.requires_grad for p in text.transformer.parameters())
        if self.frozen:
            with torch.no_grad():
                mask = (tokens != text.config.pad_token_id).long()
                out = text.transformer(input_ids=tokens, attention_mask=mask)
                pooled = text.pooler(out, mask)
            self.register_buffer("features", pooled.reshape(self.K, self.T, -1), persistent=False)
        else:
            self.register_buffer("features", tokens.reshape(self.K, self.T, -1), persistent=False)

    def forward(self, template_index: torch.Tensor) -> torch.Tensor:
        x = self.features[torch.arange(self.K), template_index]
        emb = self.model.text.proj(x) if self.frozen else self.model.encode_text(x)
        return F.normalize(emb, dim=-1)
