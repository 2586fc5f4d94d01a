"""LoRA (Hu et al. 2021): a frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) * B A``.

Written here rather than taken from ``peft``: our model is a plain ``nn.Module`` (no
``PreTrainedModel``), and a few dozen lines give us adapter parameter names we control (they go
into our checksummed safetensors checkpoints and resume bit for bit), an exact merge for export,
and no new dependency of the ``train`` extra. The maths is peft's default LoRA: A ~ Kaiming-uniform
(a = sqrt(5)), B = 0 (so training starts from the pretrained function), dropout on the adapter's
input only, scale alpha / r.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.errors import UserValueError


class LoRALinear(nn.Module):
    """``base(x) + scale * dropout(x) @ A.T @ B.T`` with ``base`` frozen."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank <= 0:
            raise UserValueError(f"LoRA rank must be positive, got {rank}")
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scale = self.alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain Linear whose weight is ``W + scale * B A`` (same outputs without dropout)."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            delta = (self.lora_B.float() @ self.lora_A.float()) * self.scale
            out.weight.copy_((self.base.weight.float() + delta).to(out.weight.dtype))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def apply_lora(model: nn.Module, targets: Iterable[str], rank: int, alpha: float, dropout: float = 0.0) -> list[str]:
    """Freeze every parameter of ``model`` and wrap each ``nn.Linear`` whose attribute name is in
    ``targets`` (e.g. ``q_proj``, ``v_proj``); returns the wrapped modules' names."""
    targets = [t.strip() for t in targets if t.strip()]
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    linear_names = set()
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                linear_names.add(child_name)
                if child_name in targets:
                    setattr(parent, child_name, LoRALinear(child, rank, alpha, dropout))
                    wrapped.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    missing = sorted(set(targets) - {w.rsplit(".", 1)[-1] for w in wrapped})
    if missing or not wrapped:
        raise UserValueError(f"LoRA target module(s) {missing or targets} not found; Linear layers of this model: "
                             f"{', '.join(sorted(linear_names))}")
    return wrapped


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRALinear in ``model`` by its merged Linear (in place); returns how many."""
    count = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, child_name, child.merged())
                count += 1
    return count
