"""Caption embeddings during training, for both kinds of text tower.

* From-scratch open_clip text transformer: captions are tokenised once and encoded every step (trained).
* Frozen pretrained Hugging Face tower (locked-text tuning): the transformer + pooler outputs are computed
  ONCE per caption; each step only runs the trainable projection ``model.text.proj`` on them. With a
  trainable pooler (``vlmreward.towers.VlmrTokenMlpPooler``) the transformer's token states are cached
  instead and each step runs pooler + projection. Either way the result equals ``model.encode_text(tokens)``
  (tested), at a fraction of the cost.
"""
from __future__ import annotations

from types import SimpleNamespace

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
        # a trainable pooler reads token states: cache those (one row per distinct wording), else pooled outputs
        self.token_level = self.frozen and any(p.requires_grad for p in text.pooler.parameters())
        if self.frozen:
            unique, inverse = torch.unique(tokens, dim=0, return_inverse=True)  # padded rows repeat wordings
            order, batches = length_batches(model, unique, self.CHUNK)
            with torch.no_grad():
                if self.token_level:
                    width = max(b.shape[1] for b in batches)
                    states = torch.cat([F.pad(self._states(text, b), (0, 0, 0, width - b.shape[1]))
                                        for b in batches])[torch.argsort(order)]
                    mask = (unique[:, :width] != text.config.pad_token_id)
                    self.register_buffer("states", states, persistent=False)  # (U,L,width)
                    self.register_buffer("mask", mask, persistent=False)  # (U,L) bool
                    self.register_buffer("features", inverse.reshape(self.K, self.T), persistent=False)
                else:
                    pooled = torch.cat([self._pool(text, b) for b in batches])[torch.argsort(order)]
                    self.register_buffer("features", pooled[inverse].reshape(self.K, self.T, -1),
                                         persistent=False)
        else:
            self.register_buffer("features", tokens.reshape(self.K, self.T, -1), persistent=False)

    @staticmethod
    def _states(text, tokens: torch.Tensor) -> torch.Tensor:
        """Token states (B,L,width) of the frozen transformer in eval mode (no dropout: those of inference)."""
        mode = text.transformer.training
        text.transformer.eval()
        try:
            mask = (tokens != text.config.pad_token_id).long()
            return text.transformer(input_ids=tokens, attention_mask=mask).last_hidden_state
        finally:
            text.transformer.train(mode)

    @staticmethod
    def _pool(text, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled outputs of the frozen transformer (parameter-free pooler)."""
        mask = (tokens != text.config.pad_token_id).long()
        return text.pooler(SimpleNamespace(last_hidden_state=CaptionEncoder._states(text, tokens)), mask)

    def forward(self, wording_index: torch.Tensor, columns: torch.Tensor | None = None) -> torch.Tensor:
        rows = torch.arange(self.K) if columns is None else columns
        x = self.features[rows, wording_index]
        if self.token_level:
            text = self.model.text
            x = text.pooler(SimpleNamespace(last_hidden_state=self.states[x]), self.mask[x])
        emb = self.model.text.proj(x) if self.frozen else self.model.encode_text(x)
        return F.normalize(emb, dim=-1)
