"""The fine-tuned model: the pretrained GPT body (its final normed hidden states) and a linear head.

* Sentence classification pools one vector per sentence: ``last`` (the last non-pad token: in the
  causal model it is the only position that has seen the whole sentence; what
  ``LlamaForSequenceClassification`` does), ``mean`` (mean over real tokens: the default for the
  bidirectional/MLM encoder) or ``first``. Its head has no bias, as Llama's ``score`` layer.
* Token classification applies the head (with a bias, as ``LlamaForTokenClassification``) to every
  position.
Dropout (``dropout``, default 0.1 as BERT's classifier) sits between the body and the head.
Batches are right-padded; the bidirectional body gets the padding mask, the causal one does not need
it (real tokens never attend to later padding).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from model.errors import UserValueError
from model.gpt import GPT

POOLINGS = ("last", "mean", "first")


def default_pooling(body: GPT) -> str:
    return "mean" if body.config.bidirectional else "last"


class Classifier(nn.Module):
    """``kind`` ``sequence`` -> logits (B, n_labels); ``token`` -> logits (B, T, n_labels)."""

    def __init__(self, body: GPT, n_labels: int, kind: str, pooling: Optional[str] = None, dropout: float = 0.1):
        super().__init__()
        if kind not in ("sequence", "token"):
            raise UserValueError(f"kind must be 'sequence' or 'token', got {kind!r}")
        pooling = pooling or default_pooling(body)
        if pooling not in POOLINGS:
            raise UserValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.body = body
        self.kind, self.pooling, self.n_labels = kind, pooling, n_labels
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        d = body.config.n_embd
        self.head = nn.Linear(d, n_labels, bias=(kind == "token"), device=body.tok_emb.weight.device)
        nn.init.normal_(self.head.weight, std=0.02)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask if self.body.config.bidirectional else None
        h = self.body.hidden_states(idx, attention_mask=mask)
        if self.kind == "token":
            return self.head(self.dropout(h)).float()
        if self.pooling == "last":
            last = attention_mask.long().sum(1).clamp(min=1) - 1
            pooled = h[torch.arange(h.shape[0], device=h.device), last]
        elif self.pooling == "mean":
            m = attention_mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        else:
            pooled = h[:, 0]
        return self.head(self.dropout(pooled)).float()


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by name (tied parameters once): what a fine-tuning run saves."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


class TrainableView(nn.Module):
    """A module whose state is only the trainable parameters of ``model`` (for model/checkpoint.py):
    a LoRA run's checkpoints then hold the adapters and the head, never the frozen base."""

    def __init__(self, model: nn.Module):
        super().__init__()
        object.__setattr__(self, "_target", model)  # not registered: no parameters of its own

    def state_dict(self, *args, **kwargs):
        return dict(trainable_state(self._target))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        params = dict(self._target.named_parameters())
        with torch.no_grad():
            for name, t in state_dict.items():
                params[name].copy_(t)
