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

from vlmreward.models import get_tokenizer, length_batches


class CaptionEncoder(torch.nn.Module):
    """Embeddings of ``captions[k][t]`` (K goals x T wordings, every goal the same number of wordings).

    ``forward(wording_index int64 (C,), columns int64 (C,) | None) -> (C,D)``: L2-normalised embeddings of
    ``captions[columns[i]][wording_index[i]]`` (all K goals when ``columns`` is None), differentiable w.r.t.
    the trainable part.
    """

    #: captions per forward pass of the frozen tower when caching (bounds its attention memory)
    CHUNK = 512

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
            unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)  # padded rows repeat wordings
            order, batches = length_batches(model, unique, self.CHUNK)
            with torch.no_grad():
                pooled = torch.cat([self._pool(text, b) for b in batches])[torch.argsort(order)]
            self.register_buffer("features", pooled[inverse].reshape(self.K, self.T, -1), persistent=False)
        else:
            self.register_buffer("features", tokens.reshape(self.K, self.T, -1), persistent=False)

    @staticmethod
    def _pool(text, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled outputs of the frozen transformer in eval mode (no dropout: the features of inference)."""
        mode = text.transformer.training
        text.transformer.eval()
        try:
            mask = (tokens != text.config.pad_token_id).long()
            return text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
        finally:
            text.transformer.train(mode)

    def forward(self, wording_index: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(self.K) if columns is None else columns
        x = self.features[rows, wording_index]
        emb = self.model.text.proj(x) if self.frozen else self.model.encode_text(x)
        return F.normalize(emb, dim=-1)
